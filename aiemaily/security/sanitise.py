"""Sanitising e-mail HTML for display (nh3, the Rust `ammonia` sanitiser).

An e-mail body is hostile input written by anyone who knows an address. What survives here is a
conservative subset of HTML: text structure, tables, links and images, with no script, no style, no
forms, no frames, no event handlers and no URL scheme except http(s)/mailto for links.

Styles are stripped rather than filtered: keeping `style` attributes would need `'unsafe-inline'`
in the message frame's style-src, and CSS alone can exfiltrate (attribute selectors, background
URLs) or spoof our own UI. Mail looks plainer; that is the price.

Remote images are trackers as often as pictures, so each remote `<img src>` becomes a local
"blocked" placeholder unless the caller passes `proxy_url`, a function that maps the remote URL to
our signed image proxy (aiemaily.security.imageproxy); the browser then never contacts the sender's
server, and the proxy refuses private addresses. The sanitised HTML is displayed only inside a
sandboxed iframe with its own CSP (aiemaily.security.mailframe): two layers, not one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

import nh3

ALLOWED_TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "caption", "center", "cite", "code", "col", "colgroup", "dd",
    "del", "div", "dl", "dt", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd",
    "li", "ol", "p", "pre", "q", "s", "small", "span", "strike", "strong", "sub", "sup", "table",
    "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul",
})
# Dropped with everything inside them: their text is code or chrome, never message content.
DROPPED_WITH_CONTENT = frozenset({
    "script", "style", "noscript", "template", "title", "head", "iframe", "frame", "frameset", "object",
    "embed", "applet", "svg", "math", "form", "button", "select", "textarea", "option", "audio",
    "video", "canvas", "xmp", "noembed", "noframes", "plaintext",
})
_CELL = {"align", "valign", "colspan", "rowspan", "width", "height"}
ALLOWED_ATTRIBUTES = {
    "*": {"title", "lang", "dir"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height"},
    "table": {"align", "width", "border", "cellpadding", "cellspacing", "summary"},
    "td": _CELL,
    "th": _CELL | {"scope"},
    "tr": {"align", "valign"},
    "col": {"span", "width", "align"},
    "colgroup": {"span", "width", "align"},
    "ol": {"start", "type"},
    "blockquote": {"cite"},
    "q": {"cite"},
}
LINK_SCHEMES = frozenset({"http", "https", "mailto"})
IMAGE_PROXY_PATH = "/image-proxy"
# Inline images the sender embedded as data: URLs are harmless rasters; SVG is excluded on principle.
_DATA_IMAGE = re.compile(r"^data:image/(?:png|gif|jpeg|webp);base64,[A-Za-z0-9+/=\s]+$", re.IGNORECASE)
BLOCKED_IMAGE = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' width='120' height='24'%3E"
    "%3Crect width='120' height='24' fill='%23eee'/%3E%3Ctext x='6' y='16' font-size='11' "
    "fill='%23666'%3Eimage blocked%3C/text%3E%3C/svg%3E"
)

ProxyUrl = Callable[[str], str]


def _scheme(url: str) -> str:
    try:
        return urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return ""


def _safe_href(value: str) -> str | None:
    return value if _scheme(value) in LINK_SCHEMES else None


def _image_src(value: str, proxy_url: ProxyUrl | None) -> str:
    if _DATA_IMAGE.match(value.strip()):
        return value.strip()
    if _scheme(value) in ("http", "https") and proxy_url is not None:
        return proxy_url(value.strip())
    # Remote while images are off, cid: parts, relative paths, anything odd: nothing is fetched.
    return BLOCKED_IMAGE


def _attribute_filter(proxy_url: ProxyUrl | None) -> Callable[[str, str, str], str | None]:
    def keep(tag: str, attribute: str, value: str) -> str | None:
        if attribute == "href":
            return _safe_href(value)
        if tag == "img" and attribute == "src":
            return _image_src(value, proxy_url)
        if attribute == "cite":
            return value if _scheme(value) in ("http", "https") else None
        return value

    return keep


def _only_our_proxy(url: str) -> str | None:
    # nh3 asks about every relative URL after our filter ran: the only relative URL we ever produce
    # is a proxy URL; anything else relative (which would hit our own origin with the user's
    # cookies) is removed.
    return url if url.startswith(IMAGE_PROXY_PATH + "?") else None


def sanitise_email_html(html: str, *, proxy_url: ProxyUrl | None = None) -> str:
    """Sanitised HTML fragment. `proxy_url` set means "load images", through that function."""
    return nh3.clean(
        html or "",
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
        attribute_filter=_attribute_filter(proxy_url),
        url_schemes={"http", "https", "mailto", "data"},
        url_relative=_only_our_proxy,
        link_rel="noopener noreferrer nofollow",
        set_tag_attribute_values={"a": {"target": "_blank"}},
        strip_comments=True,
    )
