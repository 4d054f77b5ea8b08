"""`{% script 'js/app.js' %}`: a same-origin script tag with the CSP nonce and Subresource Integrity.

The integrity hash is of the source file under static/ (collectstatic copies JavaScript unchanged),
so a tampered copy on a CDN or in the static root does not run. Computed once per file version.
"""

import base64
import hashlib
from functools import lru_cache
from pathlib import Path

from django import template
from django.contrib.staticfiles import finders
from django.templatetags.static import static
from django.utils.html import format_html

register = template.Library()


@lru_cache(maxsize=64)
def _digest(path: str, mtime_ns: int) -> str:
    data = Path(path).read_bytes()
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


def integrity(name: str) -> str:
    found = finders.find(name)
    if not found:
        raise template.TemplateSyntaxError(f"static file {name!r} not found")
    return _digest(found, Path(found).stat().st_mtime_ns)


@register.simple_tag(takes_context=True)
def script(context, name: str):
    request = context.get("request")
    nonce = getattr(request, "csp_nonce", "") if request is not None else ""
    return format_html('<script src="{}" integrity="{}" nonce="{}" defer></script>',
                       static(name), integrity(name), nonce)
