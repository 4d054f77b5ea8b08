"""Rendering a sanitised e-mail body inside a sandboxed iframe with its own CSP.

Independent layers, each enough on its own to stop scripts:
1. sanitise_email_html() removes script, handlers, frames, forms, styles and unsafe URLs;
2. the body is shown in `<iframe sandbox srcdoc=...>` WITHOUT allow-scripts (and without
   allow-forms, allow-modals or allow-top-navigation);
3. the inner document carries its own `default-src 'none'` policy: images only from our image
   proxy path and data:, our one stylesheet, nothing else;
4. a srcdoc document also inherits the CSP of the page around it (no inline script there either).

Why the sandbox includes allow-same-origin: the image proxy requires login, and a frame with an
opaque origin is "cross-site" for cookies, so the SameSite=Lax session cookie would never reach
the proxy (Chromium then also blocks the answer by CORP same-origin). allow-same-origin is only
dangerous together with allow-scripts (a script could then remove its own sandbox); without
scripts, it grants the message nothing it could use. The frame's img-src names the proxy path
exactly, so the message cannot make the browser request any other URL of ours with the cookie.
allow-popups(-to-escape-sandbox) lets links (target=_blank, rel=noopener) open in a new tab as
ordinary pages; javascript: links never survive the sanitiser, and tests click them anyway.
"""

from __future__ import annotations

from django.shortcuts import render
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.utils.safestring import SafeString, mark_safe

from aiemaily.security import imageproxy
from aiemaily.security.sanitise import IMAGE_PROXY_PATH, sanitise_email_html

MESSAGE_STYLESHEET = "css/message.css"
FRAME_SANDBOX = "allow-same-origin allow-popups allow-popups-to-escape-sandbox"


def request_origin(request) -> str:
    return f"{request.scheme}://{request.get_host()}"


def frame_csp(origin: str) -> str:
    """The message document's own policy: nothing but proxied images, data: images and our stylesheet.

    Path-restricted sources: the image proxy path exactly, and the one message stylesheet.
    """
    return (
        f"default-src 'none'; img-src {origin}{IMAGE_PROXY_PATH} data:; "
        f"style-src {origin}{static(MESSAGE_STYLESHEET)}; form-action 'none'; base-uri 'none'"
    )


def message_document(request, html: str, *, load_images: bool) -> str:
    user = getattr(request, "user", None)
    viewer = user.pk if user is not None and user.is_authenticated else None
    body = sanitise_email_html(html, proxy_url=imageproxy.proxy_url_for(viewer) if load_images else None)
    origin = request_origin(request)
    return render_to_string(
        "mail/message_document.html",
        {
            # Already sanitised: marked safe so it is escaped exactly once, into the srcdoc attribute.
            "body_html": mark_safe(body),  # noqa: S308 - nh3 output
            "frame_csp": frame_csp(origin),
            "stylesheet_url": origin + static(MESSAGE_STYLESHEET),
        },
    )


def render_message_frame(request, html: str, *, load_images: bool = False, title: str = "Message") -> SafeString:
    """The `<iframe>` element to put in a page; its srcdoc holds the sanitised message document."""
    return render_to_string(
        "mail/message_frame.html",
        {
            "document": message_document(request, html, load_images=load_images),
            "sandbox": FRAME_SANDBOX,
            "title": title,
        },
    )


def message_page(request, *, subject: str, sender: str, html: str):
    """A full page for one message; `?images=1` is the per-message "load images" choice."""
    load_images = request.GET.get("images") == "1"
    frame = render_message_frame(request, html, load_images=load_images, title=f"Message: {subject}")
    context = {"subject": subject, "sender": sender, "frame": frame, "images_loaded": load_images}
    return render(request, "mail/message.html", context)
