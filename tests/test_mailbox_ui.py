"""Mailbox pages: list and search, a message in its sandboxed frame with its actions, compose and
outbox; another user's message is 404 on every page."""

import pytest
from django.test import Client

from aiemaily.ownership.binding import owner_scope
from mail.models import Delegation, Message, OutboxMessage
from tests.factories import UserFactory
from tests.test_delegation import THREAD
from tests.test_sync_imap import _sync, connected, objects_dir  # noqa: F401 - fixtures

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
        html_message = Message.objects.for_owner(client.user).get(subject="html")
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
            "body_text": "Agreed.", "in_reply_to": message.message_id})
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
