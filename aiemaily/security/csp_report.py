"""`/csp-report`: where browsers send Content-Security-Policy violation reports.

Accepts both formats browsers use: `application/csp-report` (the `report-uri` directive, one
`{"csp-report": {...}}` object) and `application/reports+json` (the Reporting API behind
`report-to`, a list of `{"type": "csp-violation", "body": {...}}`).

Anyone can post here, so the endpoint is cheap and bounded: a body-size cap, a per-client-IP rate
limit in the Django cache, no database, no CSRF (browsers send no token), no CORS (browsers post
reports without preflight, and nobody needs to read our answer), and always an empty 204 when
accepted. What it logs is a redacted summary: URLs are cut to their origin and path (queries and
fragments may carry tokens), the script sample is dropped, every field is length-capped.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from aiemaily.security.client_ip import client_ip
from aiemaily.security.window_count import count_in_window

logger = logging.getLogger("aiemaily.security.csp")

CONTENT_TYPES = frozenset({"application/csp-report", "application/reports+json"})
MAX_REPORTS_PER_REQUEST = 10
_FIELD_CAP = 200
# Both spellings: report-uri sends kebab-case keys, the Reporting API camelCase ones.
_FIELDS = {
    "document": ("document-uri", "documentURL"),
    "directive": ("effective-directive", "effectiveDirective", "violated-directive"),
    "blocked": ("blocked-uri", "blockedURL"),
    "source": ("source-file", "sourceFile"),
    "line": ("line-number", "lineNumber"),
    "disposition": ("disposition",),
}


def _clean_text(value: object) -> str:
    text = str(value)[:_FIELD_CAP]
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _redact_url(value: object) -> str:
    """Origin and path only; keywords like 'inline' or 'eval' pass unchanged."""
    text = str(value)
    try:
        parts = urlsplit(text)
    except ValueError:
        return "?"
    if parts.scheme in ("http", "https", "ws", "wss") and parts.netloc:
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return _clean_text(f"{parts.scheme}://{host}{port}{parts.path}")
    return _clean_text(parts.scheme or text.split(":", 1)[0])


def summarise(body: dict) -> dict[str, str]:
    summary = {}
    for name, keys in _FIELDS.items():
        value = next((body[key] for key in keys if body.get(key) not in (None, "")), None)
        if value is None:
            continue
        summary[name] = _redact_url(value) if name in ("document", "blocked", "source") else _clean_text(value)
    return summary


def _violations(content_type: str, payload: object) -> list[dict]:
    if content_type == "application/csp-report":
        report = payload.get("csp-report") if isinstance(payload, dict) else None
        return [report] if isinstance(report, dict) else []
    if not isinstance(payload, list):
        return []
    return [
        item["body"]
        for item in payload[:MAX_REPORTS_PER_REQUEST]
        if isinstance(item, dict) and item.get("type") == "csp-violation" and isinstance(item.get("body"), dict)
    ]


def _over_limit(ip: str) -> bool:
    count = count_in_window(f"csp-report:{ip}", settings.AIEMAILY_CSP_REPORT_RATE_WINDOW_SECONDS)
    return count > settings.AIEMAILY_CSP_REPORT_RATE_LIMIT


def _content_type(request) -> str:
    return request.META.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()


def _declared_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return -1


def _status(code: int) -> HttpResponse:
    return HttpResponse(status=code)


@csrf_exempt
@never_cache
@require_POST
def csp_report(request):
    limit = settings.AIEMAILY_CSP_REPORT_MAX_BYTES
    length = _declared_length(request)
    if length < 0 or length > limit:
        return _status(413)
    content_type = _content_type(request)
    if content_type not in CONTENT_TYPES:
        return _status(415)
    if _over_limit(client_ip(request)):
        return _status(429)
    # Read at most limit+1 bytes whatever Content-Length said: never trust it for the cap.
    raw = request.read(limit + 1)
    if len(raw) > limit:
        return _status(413)
    try:
        payload = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return _status(400)
    for body in _violations(content_type, payload):
        logger.warning("csp violation %s", json.dumps(summarise(body), sort_keys=True))
    return _status(204)
