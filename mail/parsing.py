"""Reading real-world mail without ever crashing: every message gets listed, however malformed.

Messages are parsed with the lenient compat32 policy and each header is decoded on its own; bad
charsets decode with replacement characters; a message that cannot be parsed at all is kept and
shown raw (with `parse_error` saying why).
"""

import email
import email.header
import email.policy
import email.utils
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiemaily.security.sanitise import sanitise_email_html

_SPACE = re.compile(r"\s+")
MAX_HEADER = 998


@dataclass
class Parsed:
    message_id: str = ""
    subject: str = ""
    from_addr: str = ""
    to_addrs: list = field(default_factory=list)
    cc_addrs: list = field(default_factory=list)
    date: datetime | None = None
    in_reply_to: str = ""
    references: str = ""
    snippet: str = ""
    parse_error: str = ""


def _header(message, name: str) -> str:
    """A header decoded from RFC 2047 words; unknown charsets and 8-bit bytes decode with replacement."""
    value = message.get(name)
    if value is None:
        return ""
    try:
        words = email.header.decode_header(str(value))
        return "".join(_decode_word(text, charset) for text, charset in words)
    except Exception:  # noqa: BLE001 - a broken header must not stop the message from being listed
        return str(value).encode("utf-8", "replace").decode("utf-8", "replace")


def _decode_word(text, charset) -> str:
    if isinstance(text, str):
        return text
    try:
        return text.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return text.decode("utf-8", errors="replace")


def _addresses(value: str) -> list[str]:
    return [email.utils.formataddr(pair) if pair[0] else pair[1]
            for pair in email.utils.getaddresses([value]) if pair[1]][:100]


def _date(value: str) -> datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _text_parts(message) -> tuple[str, str]:
    plain = html = ""
    for part in message.walk() if message.is_multipart() else [message]:
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        if content_type not in ("text/plain", "text/html") or part.get_filename():
            continue
        try:
            payload = part.get_payload(decode=True) or b""
            charset = part.get_content_charset() or "utf-8"
            try:
                text = payload.decode(charset, errors="replace")
            except LookupError:  # an unknown charset name
                text = payload.decode("utf-8", errors="replace")
        except Exception:  # noqa: BLE001, S112 - one unreadable part must not hide the others
            continue
        if content_type == "text/plain" and not plain:
            plain = text
        elif content_type == "text/html" and not html:
            html = text
    return plain, html


def _load(raw: bytes):
    # compat32: several times faster than policy.default, and it never raises on a bad header;
    # headers are decoded one by one in _header().
    return email.message_from_bytes(raw, policy=email.policy.compat32), ""


def parse(raw: bytes) -> Parsed:
    """Metadata for the message list. Never raises."""
    try:
        message, note = _load(raw)
    except Exception as exc:  # noqa: BLE001
        return Parsed(parse_error=f"unparseable: {type(exc).__name__}",
                      snippet=_snippet(raw.decode("utf-8", "replace")))
    result = Parsed(parse_error=note)
    result.message_id = _header(message, "Message-ID").strip()[:MAX_HEADER]
    result.subject = _SPACE.sub(" ", _header(message, "Subject")).strip()[:MAX_HEADER]
    result.from_addr = (_addresses(_header(message, "From")) or [_header(message, "From")[:MAX_HEADER]])[0][:MAX_HEADER]
    result.to_addrs = _addresses(_header(message, "To"))
    result.cc_addrs = _addresses(_header(message, "Cc"))
    result.date = _date(_header(message, "Date"))
    result.in_reply_to = _header(message, "In-Reply-To").strip()[:MAX_HEADER]
    result.references = _header(message, "References").strip()[:4000]
    try:
        plain, html = _text_parts(message)
    except Exception as exc:  # noqa: BLE001
        plain, html = "", ""
        result.parse_error = result.parse_error or f"body unreadable: {type(exc).__name__}"
    result.snippet = _snippet(plain or re.sub(r"<[^>]+>", " ", html))
    return result


def _snippet(text: str) -> str:
    return _SPACE.sub(" ", text).strip()[:200]


def body_parts(raw: bytes) -> dict:
    """Plain text, sanitised HTML and headers for the message view. Falls back to the raw text."""
    try:
        message, _ = _load(raw)
        plain, html = _text_parts(message)
        headers = [(name, _header(message, name)[:MAX_HEADER]) for name in
                   ("From", "To", "Cc", "Subject", "Date", "Message-ID")]
        return {"body_text": plain, "body_html": sanitise_email_html(html) if html else "",
                "headers": {name: value for name, value in headers if value}}
    except Exception:  # noqa: BLE001 - shown raw instead
        return {"body_text": raw.decode("utf-8", errors="replace"), "body_html": "", "headers": {}}
