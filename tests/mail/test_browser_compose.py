"""The compose and reply forms in Chromium: a double-click on Send (two POSTs) and a resubmit of the
same form make one outbox row, never two (the form's one-time key, mail/send/outbox.py)."""

import pytest

from aiemaily.ownership.binding import owner_scope
from mail.models import OutboxMessage
from tests.harness.factories import UserFactory
from tests.mail.test_browser_mailbox import _sign_in
from tests.project.test_browser_csp import assert_clean, browser, page  # noqa: F401 - shared fixtures
from tests.project.test_web_app import _mailbox, _messages

pytestmark = [pytest.mark.usefixtures("transactional_db"), pytest.mark.claim("exactly-once-send")]


@pytest.fixture
def sender_user(db, monkeypatch):
    # Only the queueing is left out (no workers here): the rows are what this test counts.
    monkeypatch.setattr("celery.canvas._chain.apply_async", lambda self, *a, **k: None)
    user = UserFactory()
    connection, inbox, _ = _mailbox(user)
    messages = _messages(user, connection, inbox, 1, subject="Budget", from_addr="ana@example.test")
    return user, messages[0]


def _rows(user):
    with owner_scope(user):
        # The subject is sealed under the owner's metadata key: read it through the model, not a column.
        return [row.subject for row in OutboxMessage.objects.for_owner(user)]


def _posts(tab) -> list:
    posts = []
    tab.on("request", lambda request: posts.append(request.url) if request.method == "POST" else None)
    return posts


@pytest.mark.parametrize("path", ["compose", "reply"])
def test_a_double_click_and_a_resubmit_make_one_outbox_row(page, live_server, sender_user, path):  # noqa: F811
    user, message = sender_user
    base = live_server.url
    _sign_in(page, base, user)
    page.goto(base + ("/mail/compose/" if path == "compose" else f"/mail/compose/?reply={message.pk}"))
    assert_clean(page, path)
    if path == "compose":
        page.select_option("select[name=connection]", index=1)
        page.fill("input[name=to]", "friend@example.test")
        page.fill("input[name=subject]", "Double click")
    key = page.input_value("input[name=form_key]")
    token = page.input_value("input[name=csrfmiddlewaretoken]")
    page.fill("textarea[name=body_text]", "Sent once, however often Send is pressed.")
    posts = _posts(page)
    # Two clicks in a row on Send: the browser posts the form twice.
    page.locator("form.card button[type=submit]").click(click_count=2, delay=20)
    page.wait_for_url(base + "/mail/outbox/")
    page.wait_for_load_state()
    assert len([url for url in posts if "/mail/compose/" in url]) == 2, posts
    assert len(_rows(user)) == 1
    # The very same request again, from this browser (its session, the form's key and CSRF token), as
    # a browser's "Confirm form resubmission" or a retry after a dropped connection sends it.
    response = page.request.post(base + "/mail/compose/", form=_form_fields(message, path, key, token),
                                 headers={"Referer": base + "/mail/compose/"})
    assert response.ok and "already queued from this form" in response.text()
    subjects = _rows(user)
    assert subjects == ["Double click" if path == "compose" else "Re: Budget"]
    assert_clean(page, "outbox")


def _form_fields(message, path, key, token) -> dict:
    """The form as first submitted: the same key, the CSRF token the page held."""
    with owner_scope(message.owner_id):
        connection_id = str(message.connection_id)
    fields = {"csrfmiddlewaretoken": token, "connection": connection_id, "form_key": key,
              "body_text": "Sent once, however often Send is pressed."}
    if path == "compose":
        fields.update({"to": "friend@example.test", "subject": "Double click"})
    else:
        fields.update({"to": "ana@example.test", "subject": "Re: Budget", "in_reply_to": message.message_id})
    return fields
