"""Handing an attachment to the browser: always a download, never rendered in our origin.

The bytes come from a mail anyone could send: they are served as a download
(Content-Disposition: attachment), as application/octet-stream unless the type is one that
cannot run script, with nosniff and a sandboxing CSP, so an HTML or SVG attachment never executes
in Aiemaily's origin.
"""

from django.http import HttpResponse
from django.utils.http import content_disposition_header

INERT_TYPES = {"application/pdf", "image/png", "image/jpeg", "image/gif", "image/webp", "text/plain",
               "text/csv", "application/zip"}


def attachment_response(info: dict, data: bytes) -> HttpResponse:
    content_type = info["content_type"] if info["content_type"] in INERT_TYPES else "application/octet-stream"
    response = HttpResponse(data, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, info["name"])
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, no-store"
    return response
