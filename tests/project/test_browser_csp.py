"""A real browser (Debian's headless Chromium) against the live app: CSP holds and costs nothing.

1. The app's own pages (home, sign-up, login, dashboard) load, sign-up and login work through the
   UI, the static JavaScript runs, and the browser reports ZERO CSP violations and no console
   errors: the policy needs no exceptions for our own behaviour.
2. An e-mail full of XSS payloads, rendered through the sanitiser into the sandboxed message frame,
   runs nothing: no dialog, no marker set on the top window, the title unchanged, clicks inert.
   The same payloads rendered RAW into the frame also run nothing: the sandbox and the frame's own
   policy are a second, independent layer.
3. Remote images are not fetched until the user asks, and then only through the signed proxy.

Violations are collected twice: from the console, and from `securitypolicyviolation` events
through an init script (injected over the DevTools protocol, so the page's CSP does not apply).
"""

import os

import pytest
from django.template.loader import render_to_string
from django.test import override_settings
from django.urls import path
from django.utils.safestring import mark_safe

from aiemaily import urls as app_urls
from aiemaily.security import mailframe
from tests.harness.browser_fixtures import (
    CHROMIUM_ARGS,
    ensure_chromium,
    open_page,
    remote_image_site,
    sign_in,
)

pytestmark = [pytest.mark.claim("csp"), pytest.mark.usefixtures("transactional_db")]

MARKER = "pwned"


def _js(n: int) -> str:
    """What each payload tries: mark its own document, then the top window, then open a dialog.

    In-frame first: a sandboxed frame cannot reach window.top (that line throws), so only the
    in-frame marker would show that a script ran there.
    """
    return (f"document.documentElement.dataset.{MARKER}='{n}';document.title='{MARKER}';"
            f"window.top.{MARKER}={n};alert({n})")


XSS_MESSAGE = f"""
<p id="greeting">Dear customer, your invoice is attached.</p>
<script>{_js(1)}</script>
<img src="x" onerror="{_js(2)}">
<img src="https://evil.example/tracker.gif" onload="{_js(3)}">
<svg onload="{_js(4)}"><circle r="5"/></svg>
<a id="js-link" href="javascript:{_js(5)}">Click to view invoice</a>
<a id="js-link-blank" target="_blank" href="javascript:{_js(6)}">Open</a>
<iframe srcdoc="&lt;script&gt;{_js(7)}&lt;/script&gt;"></iframe>
<iframe src="javascript:{_js(8)}"></iframe>
<object data="javascript:{_js(9)}"></object>
<embed src="javascript:{_js(10)}">
<div style="width: expression(alert(11)); background: url(javascript:alert(11))">styled</div>
<style>body {{ background: url("javascript:alert(12)") }}</style>
<meta http-equiv="refresh" content="0;url=javascript:{_js(13)}">
<form id="evil-form" action="javascript:{_js(14)}"><button id="evil-button">Pay</button></form>
<details open ontoggle="{_js(15)}"><summary>x</summary></details>
<body onload="{_js(16)}">
<math><mtext><table><mglyph><style><img src=x onerror="{_js(17)}">
<base href="javascript:alert(18)//">
<p>"&gt;&lt;/iframe&gt;&lt;script&gt;{_js(19)}&lt;/script&gt;</p>
"></iframe><script>{_js(20)}</script>
"""


def hostile_message(request):
    return mailframe.message_page(request, subject="Your invoice", sender="billing@evil.example", html=XSS_MESSAGE)


def raw_message(request):
    """Test-only: the payload NOT sanitised, inside the same sandboxed frame and frame policy."""
    origin = mailframe.request_origin(request)
    document = render_to_string("mail/message_document.html", {
        "body_html": mark_safe(XSS_MESSAGE),  # noqa: S308 - deliberately hostile, test only
        "frame_csp": mailframe.frame_csp(origin),
        "stylesheet_url": origin + "/static/css/message.css",
    })
    frame = render_to_string("mail/message_frame.html",
                             {"document": document, "sandbox": mailframe.FRAME_SANDBOX, "title": "raw"})
    from django.shortcuts import render

    return render(request, "mail/message.html",
                  {"subject": "Raw", "sender": "x", "frame": frame, "images_loaded": True})


def image_message(request, port):
    # The remote site's port is in the path: the page's own "Load images" link is "?images=1".
    html = f'<p>Dear customer, our logo:</p><img alt="logo" src="http://127.0.0.1:{port}/pic.png">'
    return mailframe.message_page(request, subject="Pictures", sender="news@example.com", html=html)


def control_message(request):
    """Test-only positive control: a frame that DOES run a script (see the control test)."""
    from django.shortcuts import render

    marker = f"document.documentElement.dataset.{MARKER}='control'"
    script = f'<script nonce="{request.csp_nonce}">{marker}</script>'
    document = f"<!doctype html><p>Dear customer</p>{script}"
    frame = render_to_string("mail/message_frame.html",
                             {"document": document, "sandbox": "allow-scripts", "title": "control"})
    return render(request, "mail/message.html",
                  {"subject": "Control", "sender": "x", "frame": mark_safe(frame), "images_loaded": True})


urlpatterns = [
    path("test-only/message/control", control_message),
    path("test-only/message/hostile", hostile_message),
    path("test-only/message/raw", raw_message),
    path("test-only/message/image/<int:port>", image_message),
    *app_urls.urlpatterns,
]
USE_TEST_URLS = override_settings(ROOT_URLCONF=__name__)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = ensure_chromium()
    # Playwright's sync API keeps an event loop running in this thread, and Django then refuses
    # every ORM call made here (fixtures, the database flush between tests) as "async". Allowed for
    # this module only, and put back: `check --deploy` rightly fails while it is set.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


class Observed:
    """Everything the page told us: console lines, page errors, dialogs, CSP violation events."""

    def __init__(self, page):
        self.console: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("dialog", self._dialog)

    def _console(self, message):
        url = message.location.get("url", "")
        # Browsers ask for /favicon.ico on their own; the app has none, and that 404 is no CSP matter.
        if not url.endswith("/favicon.ico"):
            self.console.append(f"{message.type}: {message.text} ({url})")

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def console_problems(self) -> list[str]:
        return [line for line in self.console if line.startswith(("error", "warning"))]


@pytest.fixture
def page(browser):
    context, page = open_page(browser, timeout_ms=15_000)
    page.observed = Observed(page)
    # A popup's dialog counts too: a javascript: link opened in a new tab would run there.
    context.on("page", lambda popup: popup.on("dialog", page.observed._dialog))
    yield page
    context.close()


def committed_frames(page) -> list:
    # A frame whose navigation never committed (the raw message's <iframe src="javascript:...">)
    # has no document to ask, and evaluating in it would wait forever. Nothing ran there.
    return [frame for frame in page.frames if frame.url]


def violations(page) -> list[dict]:
    found = []
    for frame in committed_frames(page):
        found += frame.evaluate("window.__cspViolations || []")
    return found


def assert_clean(page, where: str, *, status: int = 200) -> None:
    assert page.evaluate("document.documentElement.dataset.appJs") == "ready", f"static JS did not run on {where}"
    assert violations(page) == [], where
    problems = page.observed.console_problems()
    if status != 200:  # Chromium reports the document's own error status; that is the page working
        problems = [line for line in problems if f"status of {status}" not in line or page.url not in line]
    assert problems == [], where
    assert page.observed.errors == [] and page.observed.dialogs == [], where


def test_app_pages_sign_up_and_log_in_without_a_single_csp_violation(page, live_server):
    base = live_server.url
    page.goto(base + "/")
    assert_clean(page, "home")

    page.goto(base + "/accounts/signup/")
    assert_clean(page, "sign-up form")
    page.fill("input[name=email]", "browser-user@example.test")
    page.fill("input[name=password1]", "a long unusual phrase")
    page.fill("input[name=password2]", "a long unusual phrase")
    page.click("form.card button[type=submit]")
    page.wait_for_url(base + "/dashboard/")
    assert "browser-user@example.test" in page.content()
    assert_clean(page, "dashboard after sign-up")

    page.click("nav form button")  # log out (a POST form with the CSRF token)
    page.wait_for_url(base + "/")
    page.goto(base + "/accounts/login/")
    assert_clean(page, "login form")
    page.fill("input[name=username]", "browser-user@example.test")
    page.fill("input[name=password]", "a long unusual phrase")
    page.click("form.card button[type=submit]")
    page.wait_for_url(base + "/dashboard/")
    assert_clean(page, "dashboard after login")

    page.goto(base + "/no-such-page/")
    assert_clean(page, "404 page", status=404)


def test_the_policy_would_catch_an_inline_script(page, live_server):
    # The collectors work: an inline script injected into our page is refused and reported.
    page.goto(live_server.url + "/")
    page.evaluate("""() => { const s = document.createElement('script');
                             s.textContent = 'window.inlineRan = true'; document.body.append(s); }""")
    page.wait_for_timeout(200)
    assert page.evaluate("window.inlineRan === undefined")
    assert any(v["directive"] == "script-src-elem" for v in violations(page))


def _message_frame(page):
    """The message frame's Frame object (for evaluating inside it over DevTools)."""
    page.frame_locator("iframe.message-frame").get_by_text("Dear customer").wait_for()
    return page.locator("iframe.message-frame").element_handle().content_frame()


def _ran_in(frame) -> bool:
    return frame.evaluate(f"document.documentElement.dataset.{MARKER} !== undefined || document.title === '{MARKER}'")


def _assert_nothing_ran(page, title: str) -> None:
    page.wait_for_timeout(300)
    for frame in committed_frames(page):
        assert not _ran_in(frame), f"script ran in {frame.url}"
    assert page.evaluate(f"window.{MARKER} === undefined")
    assert page.title() == title
    for other in page.context.pages:  # popups a click may have opened
        assert not _ran_in(other.main_frame), f"script ran in popup {other.url}"
    assert page.observed.dialogs == []


@USE_TEST_URLS
def test_control_the_detector_sees_a_script_that_does_run_in_a_frame(page, live_server):
    # Positive control: with allow-scripts and a script the policy allows (the page's own nonce),
    # the marker appears. Without this, "the marker never appeared" could mean a blind detector.
    page.goto(f"{live_server.url}/test-only/message/control")
    frame = _message_frame(page)
    frame.wait_for_function(f"document.documentElement.dataset.{MARKER} === 'control'")
    assert _ran_in(frame)


@USE_TEST_URLS
@pytest.mark.parametrize("variant", ["hostile", "raw"])
def test_an_xss_email_runs_nothing(page, live_server, variant):
    page.goto(f"{live_server.url}/test-only/message/{variant}")
    frame = _message_frame(page)
    title = page.title()
    assert MARKER not in title
    _assert_nothing_ran(page, title)
    # Click everything clickable: links and the form's button must do nothing.
    # (By text: the sanitiser drops id attributes, the raw variant keeps everything.)
    for text in ("Click to view invoice", "Open", "Pay"):
        target = page.frame_locator("iframe.message-frame").get_by_text(text, exact=True)
        if target.count():
            target.click(timeout=2000, no_wait_after=True)
    _assert_nothing_ran(page, title)
    assert frame.evaluate("document.body.textContent").count("Dear customer") == 1
    # The page around the message keeps a clean record: the breakout attempt never reached it.
    assert page.evaluate("window.__cspViolations") == []
    assert page.evaluate("document.documentElement.dataset.appJs") == "ready"
    assert page.locator("body > script, main script").count() == 0


def _sign_in(page, live_server) -> None:
    """Log a fresh user in through the login form (the image proxy requires a session)."""
    from tests.harness.factories import UserFactory

    sign_in(page, live_server.url, UserFactory())


def _image_state(page) -> dict:
    frame = _message_frame(page)
    frame.wait_for_function("[...document.images].every((img) => img.complete)")
    return frame.evaluate("""() => { const img = document.images[0];
                                     return {src: img.getAttribute('src'), width: img.naturalWidth}; }""")


@USE_TEST_URLS
def test_remote_images_stay_blocked_until_asked_for_then_come_through_the_proxy(page, live_server):
    _sign_in(page, live_server)
    with remote_image_site() as (remote, hits), override_settings(AIEMAILY_ALLOWED_PRIVATE_HOSTS=["127.0.0.1"]):
        url = f"{live_server.url}/test-only/message/image/{remote.rsplit(':', 1)[1]}"
        page.goto(url)
        blocked = _image_state(page)
        assert blocked["src"].startswith("data:image/svg+xml") and hits == []

        page.click("#load-images")
        page.wait_for_url("**images=1")
        loaded = _image_state(page)
        assert loaded["src"].startswith("/image-proxy?") and loaded["width"] == 1
        assert hits == ["/pic.png"]  # fetched once, by the proxy; the browser never contacted it
    assert violations(page) == []
