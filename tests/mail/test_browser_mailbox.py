"""The mail client in Chromium: keyboard shortcuts, the phone layout, and an axe-core accessibility
check of every signed-in page (zero serious or critical violations), all without a CSP violation."""

import datetime
import importlib.resources
import os
from pathlib import Path

import pytest

from tests.harness.factories import DEFAULT_PASSWORD, UserFactory
from tests.project.test_browser_csp import assert_clean, browser, page  # noqa: F401 - shared fixtures
from tests.project.test_web_app import BASE as BASE_DATE
from tests.project.test_web_app import _mailbox, _messages

pytestmark = [pytest.mark.usefixtures("transactional_db")]

# axe-core as vendored by axe-playwright-python (PyPI), so no npm step is needed at test time.
AXE_SOURCE = (importlib.resources.files("axe_playwright_python") / "axe.min.js").read_text()
SIGNED_IN_PAGES = ["/dashboard/", "/mail/", "/settings/", "/connections/", "/connections/add/imap/",
                   "/mail/compose/", "/mail/outbox/", "/mail/assistant/", "/settings/audit/", "/billing/",
                   "/accounts/password/", "/accounts/delete/", "/accounts/sessions/", "/accounts/security/"]
PUBLIC_PAGES = ["/", "/features", "/pricing", "/faq", "/security", "/accounts/login/", "/accounts/signup/"]


def _sign_in(tab, base, user):
    tab.goto(base + "/accounts/login/")
    tab.fill("input[name=username]", user.email)
    tab.fill("input[name=password]", DEFAULT_PASSWORD)
    tab.click("form button[type=submit]")
    tab.wait_for_url(base + "/dashboard/")


def axe_problems(tab) -> list[str]:
    """Serious and critical axe-core violations of the page (message frames are sandboxed documents of
    the sender's making, so axe stays out of iframes)."""
    tab.evaluate(AXE_SOURCE)
    result = tab.evaluate("""() => axe.run(document, {iframes: false, resultTypes: ['violations']})
                                 .then(r => r.violations.map(v => ({id: v.id, impact: v.impact,
                                     nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))})))""")
    return [f"{v['id']} ({v['impact']}): {v['nodes']}" for v in result if v["impact"] in ("serious", "critical")]


@pytest.fixture
def mailbox_user(db):
    user = UserFactory()
    connection, inbox, _ = _mailbox(user)
    messages = _messages(user, connection, inbox, 5, subject="Hello")
    return user, messages


def test_keyboard_shortcuts_move_open_and_search(page, live_server, mailbox_user):  # noqa: F811
    user, messages = mailbox_user
    base = live_server.url
    _sign_in(page, base, user)
    page.goto(base + "/mail/")
    assert_clean(page, "mailbox")
    listed = [row.get_attribute("data-message-id") for row in page.locator(".mail-row").all()]
    assert sorted(listed) == sorted(str(m.pk) for m in messages)
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("k")
    assert page.locator(".mail-row.focused").get_attribute("data-message-id") == listed[0]
    page.keyboard.press("j")
    page.keyboard.press("o")
    page.wait_for_url(f"**m={listed[1]}")
    assert page.locator(".mail-reading-pane h1").inner_text() == "Hello"
    assert page.locator(".mail-row.selected").get_attribute("data-message-id") == listed[1]
    # "?" opens the help panel; Escape closes it; "/" puts the cursor in the search box.
    page.keyboard.press("?")
    assert page.locator("#shortcuts").is_visible()
    page.keyboard.press("Escape")
    assert not page.locator("#shortcuts").is_visible()
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "mail-search"
    # Typing in the search box is text, not shortcuts.
    page.keyboard.type("jk")
    assert page.input_value("#mail-search") == "jk"
    page.keyboard.press("Enter")
    page.wait_for_url("**q=jk**")
    # "l" focuses the label field of the open message; "r" opens the reply form.
    page.goto(base + f"/mail/?m={messages[2].pk}")
    page.keyboard.press("l")
    assert page.evaluate("document.activeElement.name") == "label"
    page.keyboard.press("Escape")
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("r")
    page.wait_for_url(f"**/mail/compose/?reply={messages[2].pk}")
    assert_clean(page, "reply form from the keyboard")


def test_e_archives_the_open_message(page, live_server, mailbox_user):  # noqa: F811
    user, messages = mailbox_user
    base = live_server.url
    _sign_in(page, base, user)
    page.goto(base + f"/mail/?m={messages[0].pk}")
    page.keyboard.press("e")
    page.wait_for_url(f"**/mail/{messages[0].pk}/")
    assert "Archiving" in page.locator(".flash").inner_text()
    assert_clean(page, "after archiving")


def test_phone_layout_is_one_column(browser, live_server, mailbox_user):  # noqa: F811
    user, messages = mailbox_user
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone = context.new_page()
    try:
        _sign_in(phone, live_server.url, user)
        phone.goto(live_server.url + "/mail/")
        assert phone.locator(".mail-list-pane").is_visible() and not phone.locator(".mail-reading-pane").is_visible()
        phone.click(f'[data-message-id="{messages[0].pk}"] a')
        phone.wait_for_url(f"**m={messages[0].pk}")
        assert phone.locator(".mail-reading-pane").is_visible() and not phone.locator(".mail-list-pane").is_visible()
        phone.click("text=← Back to the list")
        assert phone.locator(".mail-list-pane").is_visible()
        box = phone.locator(".mail-list-pane").bounding_box()
        assert box["width"] <= 390
    finally:
        context.close()


def test_every_page_has_no_serious_accessibility_violation(page, live_server, mailbox_user):  # noqa: F811
    user, messages = mailbox_user
    base = live_server.url
    problems = {}
    for path in PUBLIC_PAGES:
        page.goto(base + path)
        problems[path] = axe_problems(page)
    _sign_in(page, base, user)
    for path in [*SIGNED_IN_PAGES, f"/mail/?m={messages[0].pk}", f"/mail/{messages[0].pk}/"]:
        page.goto(base + path)
        assert_clean(page, path)
        problems[path] = axe_problems(page)
    assert {path: found for path, found in problems.items() if found} == {}
    # Control: the same check sees a violation when there is one (an unlabelled field is critical).
    page.evaluate("document.querySelector('main').append(document.createElement('input'))")
    assert any(problem.startswith("label (critical)") for problem in axe_problems(page))


SCREENSHOT_PAGES = [("dashboard", "/dashboard/"), ("mailbox", "/mail/?m={first}"), ("settings", "/settings/"),
                    ("security", "/security"), ("pricing", "/pricing"), ("connect-imap", "/connections/add/imap/"),
                    ("sessions", "/accounts/sessions/"), ("ai-settings", "/mail/assistant/")]
SHOWCASE = [
    ("Dana Whitfield <dana@northwind.example>", "Can we move Thursday's review to 3 pm?", "needs_reply",
     "Hi, something came up on Thursday morning. Could we move the design review to 3 pm? Dana"),
    ("GitHub <noreply@github.example>", "[aiemaily] CI passed on main", "notification",
     "All checks have passed for commit 74795f7."),
    ("Priya Raman <priya@contoso.example>", "Contract draft v3 attached", "needs_reply",
     "Here is the third draft with the changes from legal. Can you confirm clause 7 by Friday?"),
    ("The Weekly Byte <news@byte.example>", "This week: passkeys everywhere", "newsletter",
     "Passkeys, post-quantum TLS and the return of plain text e-mail."),
    ("Marco Bellini <marco@fabrikam.example>", "Re: Offsite in Lisbon", "fyi",
     "Flights are booked; hotel confirmation to follow."),
]


@pytest.fixture
def showcase_user(db):
    """A mailbox that looks lived in: stored (encrypted) bodies, triage, a summary, security events."""
    from aiemaily.ownership.binding import owner_scope
    from mail import blobstore
    from mail.assistant.models import AiResult
    from mail.models import Message
    from tests.harness.factories import audit_event

    user = UserFactory(email="alex@aiemaily.example")
    connection, inbox, _ = _mailbox(user, email="alex@aiemaily.example")
    made = []
    with owner_scope(user):
        for i, (sender, subject, category, text) in enumerate(SHOWCASE):
            raw = f"From: {sender}\r\nTo: alex@aiemaily.example\r\nSubject: {subject}\r\n\r\n{text}\r\n".encode()
            message = Message.objects.create(
                owner=user, connection=connection, folder=inbox, subject=subject, from_addr=sender,
                snippet=text[:120], uidvalidity=1, uid=i + 1, unread=i % 2 == 0,
                date=BASE_DATE - datetime.timedelta(hours=3 * i), labels=["Work"] if i in (0, 2) else [],
                blob_key=blobstore.put(user.pk, ("messages", str(connection.pk), f"showcase-{i}"), raw))
            AiResult.objects.create(owner=user, message=message, kind="triage", status="ready", category=category)
            made.append(message)
        AiResult.objects.create(owner=user, message=made[2], kind="summary", status="ready", source="offline",
                                provider="offline")
    for action, purpose in (("store", "imap_password"), ("lease", "imap_password"), ("decrypt", "imap_password")):
        audit_event(user, action=action, purpose=purpose)
    # Where else this account is signed in, for the sessions page.
    from accounts.models import BrowserSession, RefreshTokenRecord

    with owner_scope(user):
        now = datetime.datetime.now(datetime.UTC)
        BrowserSession.objects.create(owner=user, user_agent="Safari on iPhone", ip_prefix="198.51.100.0/24",
                                      created_at=now - datetime.timedelta(days=3),
                                      last_seen_at=now - datetime.timedelta(hours=2))
        BrowserSession.objects.create(owner=user, user_agent="Firefox on Windows", ip_prefix="203.0.113.0/24",
                                      created_at=now - datetime.timedelta(days=9),
                                      last_seen_at=now - datetime.timedelta(days=1))
        RefreshTokenRecord.objects.create(owner=user, token_hash="0" * 64, created_at=now - datetime.timedelta(hours=5),
                                          expires_at=now + datetime.timedelta(days=6))
    return user, made


def test_screenshots_of_the_main_pages(page, live_server, showcase_user, tmp_path):  # noqa: F811
    """`make screenshots` points AIEMAILY_SCREENSHOTS_DIR at docs/screenshots/; otherwise they go to a
    temporary folder, and the test still checks each capture is a real, non-empty image."""
    user, messages = showcase_user
    folder = Path(os.environ.get("AIEMAILY_SCREENSHOTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    base = live_server.url
    page.set_viewport_size({"width": 1280, "height": 800})
    _sign_in(page, base, user)
    for name, path in SCREENSHOT_PAGES:
        page.goto(base + path.format(first=messages[0].pk))
        assert_clean(page, path)
        target = folder / f"{name}.png"
        page.screenshot(path=str(target))
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and target.stat().st_size > 5_000
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(base + "/mail/")
    page.screenshot(path=str(folder / "mailbox-phone.png"))


def test_new_mail_is_offered_without_a_reload(page, live_server, mailbox_user, settings):  # noqa: F811
    user, messages = mailbox_user
    settings.AIEMAILY_UI_POLL_SECONDS = 2
    _sign_in(page, live_server.url, user)
    page.goto(live_server.url + "/mail/")
    assert page.locator("#new-mail").is_hidden()
    connection = messages[0].connection
    _messages(user, connection, messages[0].folder, 1, date=BASE_DATE + datetime.timedelta(hours=1),
              subject="Fresh news")
    page.wait_for_selector("#new-mail:not([hidden])", timeout=15_000)
    assert page.locator("[data-new-count]").inner_text() == "1"
    page.click("#new-mail a")
    page.wait_for_selector("text=Fresh news")
    assert_clean(page, "after showing new mail")
