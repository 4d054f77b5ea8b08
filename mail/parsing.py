"""Reading real-world mail without ever crashing: every message gets listed, however malformed.

Messages are parsed with the lenient compat32 policy and each header is decoded on its own: raw
UTF-8 (RFC 6532, internationalised addresses) and RFC 2047 words alike; bad charsets decode with
replacement characters. The body shown is what a mail client would show: every inline text part
(a text/plain part with a file name is still text), the text of a broken multipart with a
"malformed" note, and the other parts listed as attachments. A message that cannot be parsed at
all is kept and shown raw (with `parse_error` saying why).
"""

import base64
import binascii
import email
import email.header
import email.policy
import email.utils
import quopri
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from aiemaily.security.sanitise import sanitise_email_html

_SPACE = re.compile(r"\s+")
_TAG = re.compile(r"<[^>]+>")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([QqBb])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(\?=)\s+(=\?)")
_ADDRESS_SPECIALS = re.compile(r'[()<>@,;:\\".\[\]]')
_FILENAME_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\]+")
MAX_HEADER = 998
MAX_ATTACHMENTS = 200
# Thread ids taken from the sender's own headers (References / Message-ID) carry this mark: anyone
# can write those headers, so such an id says "the sender claims this thread". Provider thread ids
# (Gmail threadId, Graph conversationId) never contain ':' (hex and base64url), so the two kinds
# can never collide however a sender writes its headers.
HEADER_THREAD_PREFIX = "hdr:"
# Structure defects that change what a reader sees; the others (a missing MIME-Version, a bad
# base64 padding) are repaired silently, as mail clients do.
_SHOWN_DEFECTS = ("StartBoundaryNotFound", "NoBoundaryInMultipart", "CloseBoundaryNotFound",
                  "MultipartInvariantViolation", "MisplacedEnvelopeHeader", "FirstHeaderLineIsContinuation",
                  "InvalidMultipartContentTransferEncoding")


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


@dataclass
class Body:
    plain: str = ""
    html: str = ""
    attachments: list = field(default_factory=list)  # [(part, {"n", "name", "content_type", "size"})]
    defects: list = field(default_factory=list)


def _raw_header(message, name: str) -> str | None:
    """The header's value as the sender wrote it, 8-bit bytes read as UTF-8 (RFC 6532).

    compat32 keeps undecodable bytes as surrogate escapes; read them back as bytes, then as UTF-8,
    falling back to replacement characters for anything that is not UTF-8.
    """
    for key, value in message.raw_items():
        if key.lower() == name.lower():
            text = str(value)
            if any("\udc80" <= ch <= "\udcff" for ch in text):
                text = text.encode("ascii", "surrogateescape").decode("utf-8", "replace")
            return text
    return None


def _decode_encoded_word(match) -> str:
    charset, encoding, text = match.group(1), match.group(2).upper(), match.group(3)
    charset = charset.split("*", 1)[0]  # RFC 2231 language suffix
    try:
        if encoding == "B":
            data = base64.b64decode(text + "=" * (-len(text) % 4))
        else:
            data = quopri.decodestring(text.replace("_", " ").encode("ascii", "replace"), header=True)
    except (binascii.Error, ValueError):
        return match.group(0)
    return _decode_bytes(data, charset)


def _decode_bytes(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except LookupError:  # an unknown charset name
        return data.decode("utf-8", errors="replace")


def decode_header_text(value: str) -> str:
    """RFC 2047 words decoded in a string that may already hold Unicode (RFC 6532)."""
    unfolded = re.sub(r"\r?\n[ \t]", " ", value)
    return _ENCODED_WORD.sub(_decode_encoded_word, _BETWEEN_WORDS.sub(r"\1\2", unfolded))


def _header(message, name: str) -> str:
    """A header decoded from raw UTF-8 and RFC 2047 words; never raises."""
    value = _raw_header(message, name)
    if value is None:
        return ""
    try:
        return decode_header_text(value)
    except Exception:  # noqa: BLE001 - a broken header must not stop the message from being listed
        return value.encode("utf-8", "replace").decode("utf-8", "replace")


def _decode_word(text, charset) -> str:
    if isinstance(text, str):
        return text
    return _decode_bytes(text, charset)


def format_address(name: str, address: str) -> str:
    """`Name <address>` in Unicode. Unlike email.utils.formataddr this never encodes to ASCII, so
    an internationalised address (RFC 6531/6532) is shown as written instead of raising."""
    name = _SPACE.sub(" ", name).strip()
    if not name:
        return address
    if _ADDRESS_SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def _addresses(value: str) -> list[str]:
    try:
        pairs = email.utils.getaddresses([value])
    except Exception:  # noqa: BLE001 - an address list the parser chokes on is shown as it is
        return [value[:MAX_HEADER]] if value.strip() else []
    return [format_address(name, address) for name, address in pairs if address][:100]


def _date(value: str) -> datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _disposition(part) -> str:
    value = part.get("Content-Disposition")
    return str(value).split(";", 1)[0].strip().lower() if value is not None else ""


def _filename(part) -> str:
    try:
        name = part.get_filename() or part.get_param("name") or ""
    except Exception:  # noqa: BLE001 - a broken parameter is a missing name
        name = ""
    if isinstance(name, tuple):  # RFC 2231 value the library left undecoded
        name = email.utils.collapse_rfc2231_value(name)
    name = decode_header_text(str(name)) if name else ""
    if any("\udc80" <= ch <= "\udcff" for ch in name):
        name = name.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    return _FILENAME_UNSAFE.sub("_", name).strip(" .")[:255]


def _payload_bytes(part) -> bytes:
    payload = part.get_payload(decode=True)
    if payload is None:  # a multipart whose boundary was never found keeps its text as a string
        text = part.get_payload()
        if isinstance(text, str):
            return text.encode("ascii", "surrogateescape")
        return b""
    return payload


def _text(part) -> str:
    return _decode_bytes(_payload_bytes(part), part.get_content_charset())


def _defect_names(message) -> list[str]:
    names = []
    for part in message.walk():
        for defect in getattr(part, "defects", ()):
            name = type(defect).__name__.removesuffix("Defect")
            if name in _SHOWN_DEFECTS and name not in names:
                names.append(name)
    return names


def read_body(message) -> Body:
    """The text to show, the attachments and the structure defects of a parsed message."""
    body = Body(defects=_defect_names(message))
    plain, html, text_attachments = [], [], []
    for part in message.walk():
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        maintype = part.get_content_maintype()
        disposition = _disposition(part)
        try:
            if maintype == "multipart":
                # A multipart whose parts could not be found (no or wrong boundary): what the
                # reader gets is its raw text, as a mail client shows it.
                text = _text(part).strip()
                if text:
                    plain.append(text)
                continue
            if content_type in ("text/plain", "text/html") and disposition != "attachment":
                (plain if content_type == "text/plain" else html).append(_text(part))
                continue
            if part is message and maintype != "text":
                pass  # a single-part message that is itself a file: listed below
            elif part is message:
                plain.append(_text(part))
                continue
            if content_type == "text/plain":
                text_attachments.append(part)
            if len(body.attachments) < MAX_ATTACHMENTS:
                number = len(body.attachments) + 1
                body.attachments.append((part, {"n": number, "name": _filename(part) or f"attachment-{number}",
                                                "content_type": content_type, "size": len(_payload_bytes(part))}))
        except Exception:  # noqa: BLE001, S112 - one unreadable part must not hide the others
            continue
    if not plain and not html:
        # Nothing inline: a text file attached is the best text there is (a mail client shows it).
        plain = [_text(part) for part in text_attachments]
    body.plain = "\n\n".join(text.strip("\r\n") for text in plain if text.strip())
    body.html = html[0] if html else ""
    return body


def _text_parts(message) -> tuple[str, str]:
    body = read_body(message)
    return body.plain, body.html


def _load(raw: bytes):
    # compat32: several times faster than policy.default, and it never raises on a bad header;
    # headers are decoded one by one in _header().
    return email.message_from_bytes(raw, policy=email.policy.compat32), ""


def malformed_note(defects: list[str]) -> str:
    return f"malformed: {', '.join(defects)}"[:200] if defects else ""


def parse(raw: bytes) -> Parsed:
    """Metadata for the message list. Never raises."""
    try:
        return _parse(raw)
    except Exception as exc:  # noqa: BLE001 - the promise: every message gets listed
        return Parsed(parse_error=f"unparseable: {type(exc).__name__}",
                      snippet=_without_nul(_snippet(raw[:4000].decode("utf-8", "replace"))))


def _parse(raw: bytes) -> Parsed:
    message, note = _load(raw)
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
        body = read_body(message)
        plain, html = body.plain, body.html
        result.parse_error = result.parse_error or malformed_note(body.defects)
    except Exception as exc:  # noqa: BLE001
        plain, html = "", ""
        result.parse_error = result.parse_error or f"body unreadable: {type(exc).__name__}"
    result.snippet = _snippet(plain) if plain else _snippet(html, html=True)
    for name in ("message_id", "subject", "from_addr", "to_addrs", "cc_addrs", "in_reply_to", "references",
                 "snippet"):
        setattr(result, name, _without_nul(getattr(result, name)))
    return result


def header_thread_id(parsed: Parsed) -> str:
    """The thread a message's own headers claim (the root of References, else its Message-ID),
    marked as header-derived; empty when it names none."""
    root = parsed.references.split()[0] if parsed.references.split() else parsed.message_id.strip()
    return f"{HEADER_THREAD_PREFIX}{root}"[:200] if root else ""


def thread_source(thread_id: str) -> str:
    """"provider" for an id the mail provider assigned, "headers" for one the sender's headers claim."""
    if not thread_id:
        return ""
    return "headers" if thread_id.startswith(HEADER_THREAD_PREFIX) else "provider"


def _without_nul(value):
    # PostgreSQL text and jsonb refuse NUL characters; one in a header must not fail a whole batch.
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


def _snippet(text: str, *, html: bool = False) -> str:
    """The first 200 characters of `text` with its whitespace collapsed (and, `html`, its tags
    dropped). Only as much of a long body is read as those 200 need: collapsing a whole body cost
    more than parsing the message. The result is the same as from the whole text."""
    size = 256  # most bodies give 200 characters from their first 256; a sparser one is read further
    while True:
        prefix = text[:size]
        if html and size < len(text):
            # A tag the cut splits starts at the first "<" after the last ">": read it from a longer prefix.
            opened = prefix.find("<", prefix.rfind(">") + 1)
            prefix = prefix[:opened] if opened != -1 else prefix
        if html:
            prefix = _TAG.sub(" ", prefix)
        snippet = _SPACE.sub(" ", prefix).strip()
        if len(snippet) >= 200 or size >= len(text):
            return snippet[:200]
        size *= 4


def body_parts(raw: bytes) -> dict:
    """Plain text, sanitised HTML, headers and attachments for the message view. Falls back to the
    raw text."""
    try:
        message, _ = _load(raw)
        body = read_body(message)
        headers = [(name, _header(message, name)[:MAX_HEADER]) for name in
                   ("From", "To", "Cc", "Subject", "Date", "Message-ID")]
        return {"body_text": body.plain, "body_html": sanitise_email_html(body.html) if body.html else "",
                "headers": {name: value for name, value in headers if value},
                "attachments": [info for _, info in body.attachments], "malformed": malformed_note(body.defects)}
    except Exception:  # noqa: BLE001 - shown raw instead
        return {"body_text": raw.decode("utf-8", errors="replace"), "body_html": "", "headers": {},
                "attachments": [], "malformed": "unparseable"}


def attachment(raw: bytes, n: int) -> tuple[dict, bytes] | None:
    """Attachment number `n` (1-based, as listed by body_parts): its description and decoded bytes."""
    try:
        message, _ = _load(raw)
        for part, info in read_body(message).attachments:
            if info["n"] == n:
                return info, _payload_bytes(part)
    except Exception:  # noqa: BLE001 - an unreadable message has no attachments to give
        return None
    return None
