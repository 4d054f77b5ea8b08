"""End to end in a real browser: a user signs in, connects an IMAP mailbox on a local Dovecot through
the form, and watches it turn active — real worker-vault and worker-sync processes doing the work
through the Redis broker — then syncs it and reads a message. No CSP violation on the way."""

import pytest

from tests.harness.browser_fixtures import open_page, sign_in
from tests.harness.mailservers import sample_messages
from tests.harness.processes import mail_worker_env, running_workers
from tests.project.test_browser_csp import browser, violations  # noqa: F401 - fixture

pytestmark = [pytest.mark.django_db(transaction=True, databases=["default", "vault"]),
              pytest.mark.claim("isolated-decryption")]


@pytest.fixture
def workers(tmp_path, test_ca):
    with running_workers(tmp_path, ("vault", "sync"), mail_worker_env(test_ca)) as started:
        yield started


def test_connect_a_mailbox_from_the_browser_and_see_it_active(browser, live_server, workers, dovecot,  # noqa: F811
                                                             smtp_server, mail_settings):
    from tests.harness.factories import UserFactory

    imap_user, password = dovecot.add_user()
    smtp_server.add_user(imap_user, password)
    dovecot.seed(imap_user, sample_messages(5, malformed=False))
    user = UserFactory()
    context, page = open_page(browser, timeout_ms=20_000)
    try:
        sign_in(page, live_server.url, user)

        page.goto(live_server.url + "/connections/add/imap/")
        # One password for both protocols (the SMTP field stays hidden), user names left to default
        # to the address: what most people need to type.
        assert page.is_hidden("input[name=smtp_password]")
        for name, value in {"email": imap_user, "imap_host": "localhost", "imap_port": str(dovecot.imaps_port),
                            "imap_password": password, "smtp_host": "localhost",
                            "smtp_port": str(smtp_server.tls_port)}.items():
            page.fill(f"input[name={name}]", value)
        page.select_option("select[name=imap_security]", "tls")
        page.select_option("select[name=smtp_security]", "tls")
        page.click("form.card button[type=submit]")
        page.wait_for_url("**/connections/*/")
        # The page polls by itself (static/js/connections.js) and reloads when the check finishes.
        page.wait_for_selector(".status-active", timeout=60_000)
        assert password not in page.content()
        assert violations(page) == []

        page.click("text=Sync now")
        page.wait_for_url("**/connections/*/")
        page.wait_for_selector("text=Up to date", timeout=60_000)
        page.goto(live_server.url + "/mail/")
        page.click("text=Message number 3")
        page.wait_for_selector("iframe.message-frame")
        frame = next(f for f in page.frames if f != page.main_frame and f.url)
        assert "Hello, this is body 3." in frame.evaluate("document.body.textContent")
        assert violations(page) == []
    finally:
        context.close()
