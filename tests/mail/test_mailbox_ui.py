"""Mailbox pages: list and search, a message in its sandboxed frame with its actions, compose and
outbox; another user's message is 404 on every page."""

import pytest
from django.test import Client

from aiemaily.ownership.binding import owner_scope
from mail.models import Delegation, Message, OutboxMessage
from tests.harness.factories import UserFactory
from tests.mail.test_delegation import THREAD
from tests.mail.test_sync_imap import _sync, connected, objects_dir  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db(databases=["default", "vault"])


@pytest.fixture
def browser(connected, dovecot):  # noqa: F811
    api_client, connection, imap_user = connected
    dovecot.seed(imap_user, THREAD + [b"Subject: html\r\nContent-Type: text/html\r\n\r\n<p>Hi<script>alert(1)</script>"
                                      b"<img src=https://tracker.example/p.gif></p>\r\n"], seen_every=0)
    _sync(api_client, connection)
    client = Client()
    client.force_login(api_client.user)
    client.user = api_client.user
    return client, connection


def _message(client, message_id):
    with owner_scope(client.user):
        return Message.objects.for_owner(client.user).get(message_id=message_id)


def test_the_list_and_search(browser):
    client, _ = browser
    page = client.get("/mail/").content.decode()
    assert "Budget" in page and "Your results" in page
    found = client.get("/mail/?q=results").content.decode()
    assert "Your results" in found and "Re: Budget" not in found


def test_a_message_is_shown_in_a_sandboxed_frame_with_images_blocked(browser):
    client, _ = browser
    with owner_scope(client.user):
        (html_message,) = [m for m in Message.objects.for_owner(client.user) if m.subject == "html"]  # sealed column
    page = client.get(f"/mail/{html_message.pk}/").content.decode()
    assert '<iframe class="message-frame"' in page and "allow-scripts" not in page
    assert "tracker.example" not in page and "Remote images are blocked" in page
    assert "<script>alert(1)" not in page and "&lt;script" not in page.split("srcdoc=")[0]


def test_actions_are_queued_from_the_page(browser, django_capture_on_commit_callbacks, monkeypatch):
    client, _ = browser
    message = _message(client, "<budget-1@example.test>")
    sent = []
    monkeypatch.setattr("celery.canvas._chain.apply_async", lambda self, *a, **k: sent.append(self))
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(f"/mail/{message.pk}/archive/").status_code == 302
        assert client.post(f"/mail/{message.pk}/read/", {"unread": "0"}).status_code == 302
        assert client.post(f"/mail/{message.pk}/label/", {"label": "Work"}).status_code == 302
        assert client.post(f"/mail/{message.pk}/label/", {"label": "bad label!"}).status_code == 302
    actions = [(c.tasks[-1].kwargs["action"], c.tasks[-1].kwargs["params"]) for c in sent]
    assert actions == [("archive", {}), ("read", {"unread": False}), ("labels", {"add": ["Work"], "remove": []})]
    assert client.post(f"/mail/{message.pk}/explode/").status_code == 404


def test_sharing_a_thread_from_the_page(browser):
    client, _ = browser
    message = _message(client, "<budget-1@example.test>")
    friend = UserFactory()
    assert client.post(f"/mail/{message.pk}/delegate/", {"email": friend.email}).status_code == 302
    with owner_scope(client.user):
        grant = Delegation.objects.for_owner(client.user).get()
    assert grant.delegate_id == friend.pk and grant.permission == "read"


def test_compose_and_reply_queue_an_outbox_message(browser, django_capture_on_commit_callbacks, monkeypatch):
    client, connection = browser
    message = _message(client, "<budget-2@example.test>")
    reply = client.get(f"/mail/compose/?reply={message.pk}").content.decode()
    assert "Re: Budget" in reply and "b@example.test" in reply
    monkeypatch.setattr("celery.canvas._chain.apply_async", lambda self, *a, **k: None)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/mail/compose/", {
            "connection": str(connection.pk), "to": "b@example.test", "cc": "", "subject": "Re: Budget",
            "body_text": "Agreed.", "in_reply_to": message.message_id, "form_key": _form_key(reply)})
    assert response.status_code == 302 and response["Location"] == "/mail/outbox/"
    with owner_scope(client.user):
        row = OutboxMessage.objects.for_owner(client.user).get()
    assert row.in_reply_to == "<budget-2@example.test>" and row.status == "queued"
    assert "Re: Budget" in client.get("/mail/outbox/").content.decode()


def test_compose_refuses_bad_input(browser):
    client, connection = browser
    response = client.post("/mail/compose/", {"connection": str(connection.pk), "to": "not-an-address",
                                              "subject": "a\nBcc: x@example.test", "body_text": "x"})
    assert response.status_code == 400
    with owner_scope(client.user):
        assert not OutboxMessage.objects.for_owner(client.user).exists()


@pytest.mark.claim("owner-scoping")
def test_another_users_message_pages_are_404(browser):
    client, connection = browser
    message = _message(client, "<private@example.test>")
    stranger = Client()
    stranger.force_login(UserFactory())
    for method, path, data in (("get", f"/mail/{message.pk}/", None), ("post", f"/mail/{message.pk}/archive/", {}),
                               ("post", f"/mail/{message.pk}/delegate/", {"email": "x@example.test"}),
                               ("get", f"/mail/compose/?reply={message.pk}", None)):
        response = getattr(stranger, method)(path, data) if data is not None else getattr(stranger, method)(path)
        assert response.status_code == 404, path
    assert "Your results" not in stranger.get("/mail/").content.decode()
    with owner_scope(client.user):
        sent = OutboxMessage.objects.create(owner=client.user, connection=connection, message_id="<o@example.test>",
                                            to_addrs=["a@example.test"], subject="Private reply", blob_key="x")
    assert stranger.get(f"/mail/outbox/{sent.pk}/").status_code == 404
    assert "Private reply" not in stranger.get("/mail/outbox/").content.decode()
    assert "Private reply" in client.get(f"/mail/outbox/{sent.pk}/").content.decode()
    response = stranger.post("/mail/compose/", {"connection": str(connection.pk), "to": "a@example.test",
                                                "subject": "s", "body_text": "b"})
    assert response.status_code == 400  # not one of their mailboxes


def _form_key(page: str) -> str:
    import re

    return re.search(r'name="form_key" value="([0-9a-f-]{36})"', page).group(1)


@pytest.mark.claim("exactly-once-send")
def test_the_same_compose_form_sent_twice_queues_one_message(browser, monkeypatch):
    client, connection = browser
    monkeypatch.setattr("celery.canvas._chain.apply_async", lambda self, *a, **k: None)
    form = client.get("/mail/compose/").content.decode()
    other_form = client.get("/mail/compose/").content.decode()
    assert _form_key(form) != _form_key(other_form)  # one key per rendered form
    fields = {"connection": str(connection.pk), "to": "b@example.test", "subject": "Once", "body_text": "x",
              "form_key": _form_key(form)}
    first, again = client.post("/mail/compose/", fields, follow=True), client.post("/mail/compose/", fields,
                                                                                    follow=True)
    assert "Queued for sending." in first.content.decode()
    assert "already queued from this form" in again.content.decode()
    with owner_scope(client.user):
        assert OutboxMessage.objects.for_owner(client.user).count() == 1
    # Another form is another message, even with the same text.
    assert client.post("/mail/compose/", dict(fields, form_key=_form_key(other_form))).status_code == 302
    with owner_scope(client.user):
        assert OutboxMessage.objects.for_owner(client.user).count() == 2


def test_a_compose_post_without_a_form_key_is_shown_again_with_a_fresh_one(browser):
    client, connection = browser
    fields = {"connection": str(connection.pk), "to": "b@example.test", "subject": "No key", "body_text": "x"}
    for key in (None, "not-a-uuid"):
        response = client.post("/mail/compose/", fields if key is None else dict(fields, form_key=key))
        page = response.content.decode()
        assert response.status_code == 400 and "press Send again" in page
        assert _form_key(page)  # a fresh key to send with
    with owner_scope(client.user):
        assert not OutboxMessage.objects.for_owner(client.user).exists()


def test_the_outbox_page_explains_uncertain_in_plain_words(browser, settings):
    client, connection = browser
    from mail import services
    from mail.send import outbox as outbox_module

    with owner_scope(client.user):
        row = services.outbox_create(owner=client.user, connection=connection, to=["b@example.test"], cc=[],
                                     subject="Maybe sent", body_text="x")
    assert "uncertain-help" not in client.get("/mail/outbox/").content.decode()  # nothing to explain
    outbox_module._set(client.user.pk, row.pk, status="uncertain", last_error=outbox_module.ANSWER_LOST)
    settings.AIEMAILY_SEND_STALE_SECONDS = 600
    page = client.get("/mail/outbox/").content.decode()
    assert 'href="#uncertain-help"' in page and "not sure it was sent" in page
    assert "never send it a second time" in page and "10 minutes after sending began" in page
    assert "took this message but never confirmed it" in page
    assert "uncertain-help" in client.get(f"/mail/outbox/{row.pk}/").content.decode()
