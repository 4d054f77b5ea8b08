"""The offline assistant end to end in a real browser, on `make run`'s defaults (no AI key, no
network): read a message, see its summary, draft a reply, edit it, press Send — one delivery at the
SMTP server. Real worker-vault, worker-sync and worker-ai processes do the work through the broker;
no CSP violation on the way."""

import time

import pytest
from rest_framework.test import APIClient

from tests.conftest import issue_tokens
from tests.harness.browser_fixtures import offline_summary, open_page, sign_in
from tests.harness.processes import mail_worker_env, running_workers, wait_for
from tests.project.test_browser_csp import browser, violations  # noqa: F401 - fixture

pytestmark = [pytest.mark.django_db(transaction=True, databases=["default", "vault"]),
              pytest.mark.claim("ai-byok")]

LUNCH = (b"From: Alice Example <alice@example.test>\r\nTo: you@example.test\r\nSubject: Team lunch\r\n"
         b"Message-ID: <lunch-1@example.test>\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n"
         b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
         b"The team lunch moves to Thursday this week. The restaurant near the office has a table for eight "
         b"people at noon. The lunch budget covers the whole team this time. "
         b"Can you confirm you will join us on Thursday?\r\n")


@pytest.fixture
def workers(tmp_path, test_ca):
    with running_workers(tmp_path, ("vault", "sync", "ai"), mail_worker_env(test_ca)) as started:
        yield started


def test_offline_summary_draft_and_send_in_the_browser(browser, live_server, workers, dovecot,  # noqa: F811
                                                       smtp_server, mail_settings):
    from mail import blobstore
    from tests.harness.factories import UserFactory

    blobstore._storage.cache_clear()  # this process (web) and the workers share the default objects dir
    imap_user, password = dovecot.add_user()
    smtp_server.add_user(imap_user, password)
    dovecot.seed(imap_user, [LUNCH])
    user = UserFactory()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(api, user)["access"])
    body = {"provider": "imap", "email": imap_user,
            "imap": {"host": "localhost", "port": dovecot.imaps_port, "security": "tls", "username": imap_user,
                     "password": password},
            "smtp": {"host": "localhost", "port": smtp_server.tls_port, "security": "tls", "username": imap_user,
                     "password": password}}
    connection_id = api.post("/api/v1/connections", body, format="json").json()["id"]
    logs = lambda: "\n".join(w.output()[-1500:] for w in workers)  # noqa: E731
    wait_for(lambda: api.get(f"/api/v1/connections/{connection_id}").json()["status"] == "active", timeout=60,
             what="the connection check")
    assert api.post(f"/api/v1/connections/{connection_id}/sync").status_code == 202
    message = wait_for(lambda: next(iter(api.get("/api/v1/messages").json()["results"]), None), timeout=60,
                       what="the synced message")
    sent_before = len(smtp_server.messages)

    context, page = open_page(browser, timeout_ms=30_000)
    try:
        sign_in(page, live_server.url, user)

        # The page asks for the summary, polls (static/js/assistant.js) and reloads when worker-ai is done.
        page.goto(f"{live_server.url}/mail/{message['id']}/")
        summary = offline_summary(page, logs)
        assert "Offline (no AI provider; nothing left Aiemaily)" in summary
        assert "1 message between Alice Example" in summary and "Thursday" in summary

        page.fill("form.ai-draft input[name=instruction]", "say yes")
        page.select_option("form.ai-draft select[name=tone]", "friendly")
        page.click("form.ai-draft button[type=submit]")
        page.wait_for_url("**/compose/**draft=**")
        page.wait_for_selector('.ai-draft-status [data-ai-source="offline"]', timeout=60_000)
        draft = page.input_value("textarea[name=body_text]")
        assert draft.startswith("Hi Alice!") and "> Can you confirm you will join us on Thursday?" in draft
        assert "[to cover: say yes]" in draft
        assert page.input_value("input[name=subject]") == "Re: Team lunch"
        # Nothing went out on its own: the draft only filled the form.
        time.sleep(1)
        assert len(smtp_server.messages) == sent_before

        edited = draft.replace("[your answer]", "Yes, I will be there.").replace("[to cover: say yes]\n", "")
        page.fill("textarea[name=body_text]", edited)
        page.click("form.card.wide button[type=submit]")
        try:
            page.wait_for_url("**/outbox/")
        except Exception:
            raise AssertionError(page.inner_text("main") if page.query_selector("main") else page.content()) from None
        try:
            wait_for(lambda: len(smtp_server.messages) > sent_before, timeout=60, what="the delivery")
        except AssertionError:
            raise AssertionError((page.inner_text("main"), logs())) from None
        time.sleep(2)  # a second delivery would show up by now
        assert len(smtp_server.messages) == sent_before + 1
        delivered = smtp_server.messages[-1]
        assert delivered.rcpt_tos == ["alice@example.test"]
        assert b"Yes, I will be there." in delivered.content and b"In-Reply-To: <lunch-1@example.test>" in \
            delivered.content
        assert violations(page) == []
    finally:
        context.close()
