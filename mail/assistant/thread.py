"""Mail as the assistant reads it: the plain text of each message of a thread, quotes removed.

Built in worker-ai from decrypted bodies, in memory only; nothing here is stored or logged.
"""

import html
import re
from dataclasses import dataclass, field

from mail.parsing import _header, _load, _text_parts

_TAG = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)
_QUOTE_INTRO = re.compile(r"^(On .{5,200}wrote:|-----Original Message-----|Le .{5,200}a écrit :)\s*$", re.M)
MAX_MESSAGE_CHARS = 20_000


@dataclass
class MailText:
    sender: str
    to: list[str]
    date: str
    subject: str
    text: str
    headers: dict = field(default_factory=dict)


def _strip_quotes(text: str) -> str:
    match = _QUOTE_INTRO.search(text)
    if match:
        text = text[:match.start()]
    lines = [line for line in text.splitlines() if not line.lstrip().startswith(">")]
    return "\n".join(lines).strip()


def read(raw: bytes, *, sender: str = "", to=(), date=None, subject: str = "") -> MailText:
    """The readable text of one message; never raises on malformed mail."""
    headers: dict = {}
    try:
        message, _ = _load(raw)
        plain, markup = _text_parts(message)
        for name in ("List-Unsubscribe", "List-Id", "Precedence", "Auto-Submitted", "X-Auto-Response-Suppress",
                     "Return-Path"):
            value = _header(message, name)
            if value:
                headers[name.lower()] = value[:500]
    except Exception:  # noqa: BLE001 - malformed mail is read as raw text
        plain, markup = raw.decode("utf-8", errors="replace"), ""
    if not plain and markup:
        plain = html.unescape(_TAG.sub(" ", markup))
    text = _strip_quotes(plain.replace("\r\n", "\n"))[:MAX_MESSAGE_CHARS]
    return MailText(sender=sender, to=list(to), date=date.isoformat() if date else "", subject=subject,
                    text=text, headers=headers)
