"""The public pages in Debian's headless Chromium: no CSP violation, no request to another host.

Every request the browser makes is recorded; each must go to the live server itself. The static
scripts carry Subresource Integrity, so they run only if their hash matches (the app's script marks
the page when it ran).
"""

from urllib.parse import urlsplit

import pytest

from tests.project.test_browser_csp import assert_clean, browser, page  # noqa: F401 - shared fixtures

pytestmark = [pytest.mark.claim("csp"), pytest.mark.usefixtures("transactional_db")]

PUBLIC_PAGES = ["/", "/features", "/pricing", "/faq", "/security", "/accounts/login/", "/accounts/signup/"]


def test_every_public_page_loads_clean_and_only_from_this_site(page, live_server):  # noqa: F811
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    own = urlsplit(live_server.url).netloc
    for path in PUBLIC_PAGES:
        page.goto(live_server.url + path)
        assert_clean(page, path)
    # Navigating through the public menu works with the same guarantees.
    page.goto(live_server.url + "/")
    page.click("nav.subnav >> text=Privacy & security")
    page.wait_for_url(live_server.url + "/security")
    assert page.locator("section.promise").count() >= 10
    assert_clean(page, "security page via the menu")
    foreign = [url for url in requested if urlsplit(url).scheme in ("http", "https") and urlsplit(url).netloc != own]
    assert foreign == []
    assert any(url.endswith("/static/js/app.js") for url in requested)


LOAD_SCRIPT = """(integrity) => new Promise((resolve) => {
    const ours = document.querySelector('script[integrity]');
    const s = document.createElement('script');
    s.src = ours.getAttribute('src') + '?again=' + Math.random();
    s.integrity = integrity === null ? ours.integrity : integrity;
    s.nonce = ours.nonce;
    s.onload = () => resolve('ran'); s.onerror = () => resolve('refused');
    document.head.append(s);
})"""


def test_a_script_whose_hash_does_not_match_is_not_run(page, live_server):  # noqa: F811
    page.goto(live_server.url + "/")
    # Control: the same file with the page's own hash and nonce runs, so a refusal below is the hash's.
    assert page.evaluate(LOAD_SCRIPT, None) == "ran"
    assert page.evaluate(LOAD_SCRIPT, "sha384-" + "A" * 64) == "refused"
