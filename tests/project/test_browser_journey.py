"""The whole life of an account in headless Chromium, on `make run`'s defaults (offline assistant, no
AI key, no network), with real worker-vault, worker-sync and worker-ai processes, a local Dovecot, a
local SMTP server and a local HTTPS autoconfig server:

sign up → connect an IMAP mailbox whose settings fill themselves from the domain's autoconfig file
→ watch it check and sync → read a message → see its summary → archive it with the `e` key (gone
from the server's INBOX) → reply with an AI draft → exactly one delivery at the SMTP server → the
core again (read, archive, reply) at a phone's viewport → add a BYOK key on the AI settings page →
see it stored in the security log → sign out a second browser from "Active sessions and API
tokens" (it is signed out on its next click) → delete the account (the workers destroy it).

On every page: zero CSP violations, no console errors, no request to any other host (every request
the browser makes is recorded), and no serious or critical axe-core violation.
"""

import imaplib
import ssl
import time
from urllib.parse import urlsplit

import pytest

from tests.harness.browser_fixtures import COLLECT_VIOLATIONS, offline_summary
from tests.harness.processes import mail_worker_env, running_workers, wait_for
from tests.mail.test_autoconfig import AutoconfigSite
from tests.mail.test_browser_mailbox import axe_problems
from tests.project.test_browser_csp import browser, violations  # noqa: F401 - fixture

pytestmark = [pytest.mark.django_db(transaction=True, databases=["default", "vault"]),
              pytest.mark.claim("csp")]

PASSWORD = "a long unusual journey phrase"
BYOK_KEY = "sk-proj-JourneyCanaryKey0123456789abcdQRST"


def _mail(message_id: str, sender: str, subject: str, text: str) -> bytes:
    return (f"From: {sender}\r\nTo: you@example.test\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n"
            f"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
            ).encode()


LUNCH = _mail("journey-lunch@example.test", "Alice Example <alice@example.test>", "Team lunch",
              "The team lunch moves to Thursday this week. The restaurant near the office has a table for "
              "eight people at noon. Can you confirm you will join us on Thursday?")
BUDGET = _mail("journey-budget@example.test", "Bob Example <bob@example.test>", "Budget review",
               "The budget review is on Friday at ten. Please bring the spreadsheet with the travel costs.")


def _autoconfig(imap_port: int, smtp_port: int) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<clientConfig version="1.1"><emailProvider id="example.test"><domain>example.test</domain>
  <incomingServer type="imap"><hostname>localhost</hostname><port>{imap_port}</port><socketType>SSL</socketType>
    <username>%EMAILADDRESS%</username></incomingServer>
  <outgoingServer type="smtp"><hostname>localhost</hostname><port>{smtp_port}</port><socketType>SSL</socketType>
    <username>%EMAILADDRESS%</username></outgoingServer>
</emailProvider></clientConfig>""".encode()


@pytest.fixture
def workers(tmp_path, test_ca):
    with running_workers(tmp_path, ("vault", "sync", "ai"), mail_worker_env(test_ca)) as started:
        yield started


@pytest.fixture
def autoconfig_site(test_ca, mail_settings, monkeypatch):
    """The domain's own autoconfig file, over real HTTPS. The web process (this one: live_server) asks
    it instead of https://autoconfig.example.test/, which no resolver here would find."""
    from mail import autoconfig

    mail_settings.AIEMAILY_AUTOCONFIG_CA_BUNDLE = str(test_ca.ca_file)
    site = AutoconfigSite(test_ca)
    monkeypatch.setattr(autoconfig, "autoconfig_urls", lambda domain: [site.url(f"/{domain}/config-v1.1.xml")])
    yield site
    site.server.shutdown()


class Journey:
    """One browser context with everything it did recorded: requests, console and page errors.

    Each page is checked before the browser leaves it: CSP violations are per document."""

    def __init__(self, context, base: str, name: str):
        self.base, self.name = base, name
        self.origin = urlsplit(base)[:2]
        self.requests: list[str] = []
        self.problems: list[str] = []
        self.checked: list[str] = []
        context.add_init_script(COLLECT_VIOLATIONS)
        context.on("request", lambda request: self.requests.append(request.url))
        self.page = context.new_page()
        self.page.set_default_timeout(30_000)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))

    def _console(self, message):
        if message.type in ("error", "warning") and not message.location.get("url", "").endswith("/favicon.ico"):
            self.problems.append(f"console {message.type}: {message.text}")

    def check(self, where: str) -> None:
        page = self.page
        page.wait_for_load_state("load")
        assert page.evaluate("document.documentElement.dataset.appJs") == "ready", f"static JS did not run: {where}"
        assert violations(page) == [], f"CSP violation on {where} ({self.name})"
        assert axe_problems(page) == [], f"accessibility on {where} ({self.name})"
        assert self.problems == [], f"{where} ({self.name})"
        self.checked.append(urlsplit(page.url).path)

    def foreign_requests(self) -> list[str]:
        return [url for url in self.requests
                if urlsplit(url)[:2] != self.origin and not url.startswith(("data:", "about:", "blob:"))]

    def goto(self, path: str, where: str | None = None) -> None:
        self.page.goto(self.base + path)
        self.check(where or path)


# What sticks out of a phone's screen (for the failure message): the outermost elements wider than it.
WIDER_THAN_THE_SCREEN = """[...document.querySelectorAll('body *')]
  .filter(el => el.getBoundingClientRect().right > screen.width + 1)
  .filter(el => !el.parentElement || el.parentElement.getBoundingClientRect().right <= screen.width + 1)
  .map(el => `${el.tagName.toLowerCase()}.${el.className} right=${Math.round(el.getBoundingClientRect().right)}`)"""


def _imap_count(dovecot, test_ca, user: str, password: str, folder: str) -> int:
    context = ssl.create_default_context(cafile=str(test_ca.ca_file))
    with imaplib.IMAP4_SSL("localhost", dovecot.imaps_port, ssl_context=context) as imap:
        imap.login(user, password)
        status, data = imap.select(folder, readonly=True)
        return int(data[0]) if status == "OK" else 0


def test_a_whole_account_life_in_the_browser(browser, live_server, workers, dovecot, smtp_server,  # noqa: F811
                                             autoconfig_site, test_ca, unique_email):
    from accounts.models import User
    from mail import blobstore

    blobstore._storage.cache_clear()  # this process (web) and the workers share the default objects dir
    imap_user, imap_password = dovecot.add_user()
    smtp_server.add_user(imap_user, imap_password)
    dovecot.seed(imap_user, [LUNCH, BUDGET], seen_every=0)
    autoconfig_site.routes["/example.test/config-v1.1.xml"] = (
        200, _autoconfig(dovecot.imaps_port, smtp_server.tls_port), 0)
    base = live_server.url
    logs = lambda: "\n".join(w.output()[-2000:] for w in workers)  # noqa: E731
    sent_before = len(smtp_server.messages)
    contexts = []

    def new_journey(name: str, **options) -> Journey:
        context = browser.new_context(**options)
        contexts.append(context)
        return Journey(context, base, name)

    try:
        desk = new_journey("desktop", viewport={"width": 1280, "height": 900})
        page = desk.page

        # Sign up.
        desk.goto("/accounts/signup/")
        page.fill("input[name=email]", unique_email)
        page.fill("input[name=password1]", PASSWORD)
        page.fill("input[name=password2]", PASSWORD)
        page.click("form.card button[type=submit]")
        page.wait_for_url(base + "/dashboard/")
        desk.check("dashboard after sign-up")
        user = User.objects.get(email=unique_email)

        # Connect the mailbox: typing the address fills the servers from the domain's autoconfig file.
        desk.goto("/connections/add/imap/")
        page.fill("input[name=email]", imap_user)
        page.press("input[name=email]", "Tab")
        # Polled from here: the page's policy forbids the eval a string wait_for_function needs.
        wait_for(lambda: page.input_value("input[name=imap_host]") == "localhost", timeout=15,
                 what="the autoconfig fill")
        assert page.input_value("input[name=imap_port]") == str(dovecot.imaps_port)
        assert page.input_value("input[name=smtp_port]") == str(smtp_server.tls_port)
        assert page.input_value("select[name=imap_security]") == "tls"
        assert "published configuration" in page.inner_text("[data-autoconfig-status]")
        assert autoconfig_site.hits == ["/example.test/config-v1.1.xml"]
        desk.check("connect form, filled in")
        page.fill("input[name=imap_password]", imap_password)
        page.click("form.card button[type=submit]")
        page.wait_for_url("**/connections/*/")
        desk.check("connection page, being checked")

        # Watch it: the page polls, reloads when the check is done, then shows the first sync's progress.
        try:
            page.wait_for_selector(".status-active", timeout=60_000)
            page.wait_for_selector("progress[data-sync-progress]")
            page.wait_for_selector("text=Up to date", timeout=60_000)
        except Exception:
            raise AssertionError((page.inner_text("main"), logs())) from None
        assert imap_password not in page.content()
        desk.check("connection page, synced")

        # Read a message in the three-pane mailbox.
        desk.goto("/mail/")
        page.click("text=Team lunch")
        page.wait_for_url("**m=*")
        message_id = page.url.rsplit("m=", 1)[1].split("&")[0]
        page.wait_for_selector("iframe.message-frame")
        frame = next(f for f in page.frames if f != page.main_frame and f.url)
        # Polled from here: the frame's own policy forbids the eval a wait_for_function would need.
        wait_for(lambda: "moves to Thursday" in frame.evaluate("document.body ? document.body.textContent : ''"),
                 timeout=15, what="the message text in its frame")
        desk.check("mailbox, reading")

        # Its summary, made by the offline assistant in worker-ai.
        page.click("text=Summary, AI draft and sharing")
        page.wait_for_url(f"**/mail/{message_id}/")
        summary = offline_summary(page, logs)
        assert "Offline (no AI provider; nothing left Aiemaily)" in summary and "Thursday" in summary
        desk.check("message page with its summary")

        # Archive with the keyboard: `e` on the open message. The server's INBOX loses it.
        desk.goto(f"/mail/?m={message_id}", "mailbox, before archiving")
        page.keyboard.press("e")
        page.wait_for_url(f"**/mail/{message_id}/")
        assert "Archiving" in page.locator(".flash").inner_text()
        desk.check("message page after `e`")
        wait_for(lambda: _imap_count(dovecot, test_ca, imap_user, imap_password, "INBOX") == 1, timeout=60,
                 what="the archive at the IMAP server")
        assert _imap_count(dovecot, test_ca, imap_user, imap_password, "Archive") == 1

        # Reply with an AI draft, edit it, send it: exactly one delivery.
        page.reload()
        page.fill("form.ai-draft input[name=instruction]", "say yes")
        page.click("form.ai-draft button[type=submit]")
        page.wait_for_url("**/compose/**draft=**")
        page.wait_for_selector('.ai-draft-status [data-ai-source="offline"]', timeout=60_000)
        draft = page.input_value("textarea[name=body_text]")
        assert draft.startswith("Hi Alice") and "> Can you confirm you will join us on Thursday?" in draft
        desk.check("reply form with the AI draft")
        assert len(smtp_server.messages) == sent_before  # a draft never sends itself
        page.fill("textarea[name=body_text]", draft.replace("[your answer]", "Yes, I will be there."))
        page.click("form.card.wide button[type=submit]")
        page.wait_for_url("**/outbox/")
        desk.check("outbox")
        try:
            wait_for(lambda: len(smtp_server.messages) > sent_before, timeout=60, what="the delivery")
        except AssertionError:
            raise AssertionError((page.inner_text("main"), logs())) from None
        page.reload()
        page.wait_for_selector(".status-sent", timeout=30_000)
        assert len(smtp_server.messages) == sent_before + 1
        delivered = smtp_server.messages[-1]
        assert delivered.rcpt_tos == ["alice@example.test"]
        assert b"Yes, I will be there." in delivered.content
        assert b"In-Reply-To: <journey-lunch@example.test>" in delivered.content

        # The core again on a phone, in the same session: read, archive, reply.
        phone = new_journey("phone", viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                            storage_state=page.context.storage_state())
        tap = phone.page
        phone.goto("/mail/", "mailbox on a phone")
        assert tap.locator(".mail-list-pane").is_visible() and not tap.locator(".mail-reading-pane").is_visible()
        assert tap.evaluate("document.documentElement.scrollWidth") <= 390, tap.evaluate(WIDER_THAN_THE_SCREEN)
        tap.click("text=Budget review")
        tap.wait_for_url("**m=*")
        budget_id = tap.url.rsplit("m=", 1)[1].split("&")[0]
        assert tap.locator(".mail-reading-pane").is_visible() and not tap.locator(".mail-list-pane").is_visible()
        tap.wait_for_selector("iframe.message-frame")
        phone.check("reading on a phone")
        tap.click(".mail-reading-pane button:text('Archive')")
        tap.wait_for_url(f"**/mail/{budget_id}/")
        phone.check("message page on a phone after archiving")
        wait_for(lambda: _imap_count(dovecot, test_ca, imap_user, imap_password, "INBOX") == 0, timeout=60,
                 what="the second archive at the IMAP server")
        tap.click("main .actions a.button:text-is('Reply')")
        try:
            tap.wait_for_url(f"**/mail/compose/?reply={budget_id}")
        except Exception:
            raise AssertionError((tap.url, tap.inner_text("main"))) from None
        phone.check("reply form on a phone")
        tap.fill("textarea[name=body_text]", "I will bring the spreadsheet.")
        tap.click("form.card.wide button[type=submit]")
        tap.wait_for_url("**/outbox/")
        phone.check("outbox on a phone")
        wait_for(lambda: len(smtp_server.messages) > sent_before + 1, timeout=60, what="the phone's delivery")
        time.sleep(2)  # a duplicate of either send would have arrived by now
        assert len(smtp_server.messages) == sent_before + 2
        assert smtp_server.messages[-1].rcpt_tos == ["bob@example.test"]

        # A BYOK key on the AI settings page, then its storing in the security log.
        desk.goto("/mail/assistant/")
        page.select_option("select[name=newkey-provider]", "openai")
        page.fill("input[name=newkey-key]", BYOK_KEY)
        page.click("form.ai-key-add button[type=submit]")
        page.wait_for_url(base + "/mail/assistant/")
        assert "…QRST" in page.inner_text("table.ai-keys") and BYOK_KEY not in page.content()
        desk.check("AI settings with a key")

        def key_stored_in_log():
            page.goto(base + "/settings/audit/")
            # Two events: sealed on arrival (web), then encrypted under the user's data key (vault).
            return page.locator("tr:has-text('ai_key'):has-text('encrypted under data key')").count() == 1

        try:
            wait_for(key_stored_in_log, timeout=60, interval=1, what="the key in the security log")
        except AssertionError:
            raise AssertionError((page.inner_text("main"), logs())) from None
        assert BYOK_KEY not in page.content()
        desk.check("security log")

        # A second browser signs in; this one signs it out from the sessions page.
        other = new_journey("second browser")
        other.goto("/accounts/login/")
        other.page.fill("input[name=username]", unique_email)
        other.page.fill("input[name=password]", PASSWORD)
        other.page.click("form.card button[type=submit]")
        other.page.wait_for_url(base + "/dashboard/")
        other.check("second browser's dashboard")
        desk.goto("/settings/", "settings hub")
        page.click("text=Active sessions and API tokens")
        page.wait_for_url(base + "/accounts/sessions/")
        desk.check("sessions page")
        others = page.locator("table.sessions tbody tr:not([data-current])")
        current = page.locator("table.sessions tbody tr[data-current]")
        assert current.count() == 1 and "This browser" in current.inner_text()
        assert others.count() == 1  # the phone's context shares this browser's session
        others.first.locator("button").click()
        page.wait_for_url(base + "/accounts/sessions/")
        assert "That session is signed out." in page.locator(".flash").inner_text()
        desk.check("sessions page after signing one out")
        other.page.goto(base + "/mail/")
        other.page.wait_for_url("**/accounts/login/**")
        other.check("second browser, signed out")
        page.goto(base + "/dashboard/")
        assert page.url == base + "/dashboard/"  # this browser is still signed in

        # Delete the account: sign-in stops at once, and the workers destroy its keys and data.
        desk.goto("/accounts/delete/")
        page.fill("input[name=password]", PASSWORD)
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("form.card button[type=submit]")
        page.wait_for_url(base + "/")
        desk.check("home after deletion")
        try:
            wait_for(lambda: not User.objects.filter(pk=user.pk).exists(), timeout=90, interval=0.5,
                     what="the account's purge")
        except AssertionError:
            raise AssertionError(logs()) from None
        desk.goto("/accounts/login/", "login after deletion")
        page.fill("input[name=username]", unique_email)
        page.fill("input[name=password]", PASSWORD)
        page.click("form.card button[type=submit]")
        page.wait_for_selector(".errors, .error")
        assert page.url.startswith(base + "/accounts/login/")

        for journey in (desk, phone, other):
            assert any(url.startswith(base + "/static/") for url in journey.requests)  # the recorder works
            assert journey.foreign_requests() == [], journey.name
            assert journey.problems == [], journey.name
        assert len(desk.checked) >= 15
    finally:
        for context in contexts:
            context.close()
