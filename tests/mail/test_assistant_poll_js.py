"""static/js/assistant.js in Chromium: the page that polls for a summary reloads when it is ready, but
never under a reader who is already leaving. A tap on Reply while worker-ai finishes must reach the
reply form: a reload at that moment cancels the navigation and leaves them where they were (seen on
a phone in tests/project/test_browser_journey.py on a slow machine).

The script runs as served, on a page of its own: the summary's status answer and the link's target
are held by the test, so the moments line up exactly: the link is followed, then the summary is ready,
then the reply form answers."""

import json
import time
from pathlib import Path

from tests.harness.processes import ROOT
from tests.project.test_browser_csp import browser  # noqa: F401 - fixture

SCRIPT = (Path(ROOT) / "static" / "js" / "assistant.js").read_text()
ORIGIN = "http://app.test"
MESSAGE_PAGE = ('<!doctype html><title>Message</title><a id="reply" href="/compose">Reply</a>'
                '<p data-ai-poll="/poll">Working on it…</p><script src="/assistant.js" defer></script>')


def pump_until(page, predicate, what: str, timeout: float = 15):
    """Let the page run (route handlers are called while Playwright waits) until `predicate` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(50)


def test_a_summary_finishing_while_the_reader_leaves_does_not_cancel_where_they_go(browser):  # noqa: F811
    state = {"done": False, "message_loads": 0, "polls": 0, "held": []}

    def serve(route):
        path = route.request.url[len(ORIGIN):].split("?")[0]
        if path == "/message":
            state["message_loads"] += 1
            route.fulfill(status=200, content_type="text/html", body=MESSAGE_PAGE)
        elif path == "/assistant.js":
            route.fulfill(status=200, content_type="application/javascript", body=SCRIPT)
        elif path == "/poll":
            state["polls"] += 1
            route.fulfill(status=200, content_type="application/json",
                          body=json.dumps({"status": "done" if state["done"] else "pending"}))
        elif path == "/compose":
            state["held"].append(route)  # answered below, once the summary is ready
        else:
            route.fulfill(status=404, body="")

    context = browser.new_context()
    try:
        page = context.new_page()
        page.route(f"{ORIGIN}/**", serve)
        page.goto(f"{ORIGIN}/message")
        pump_until(page, lambda: state["polls"] >= 1, "the first poll")
        page.click("#reply", no_wait_after=True)
        pump_until(page, lambda: state["held"], "the reply form requested")
        state["done"] = True  # worker-ai finishes while the reply form is on its way
        page.wait_for_timeout(3000)  # three more poll periods
        state["held"][0].fulfill(status=200, content_type="text/html", body="<!doctype html><title>Reply</title>")
        page.wait_for_url(f"{ORIGIN}/compose", timeout=15_000)
        assert state["message_loads"] == 1  # no reload under the reader
    finally:
        context.close()
