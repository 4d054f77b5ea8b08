"""Archive, labels and read/unread: applied at the IMAP server (real Dovecot), then reflected locally;
idempotent under retries; another user's message is 404 for every action."""

import imaplib
import ssl
import uuid

import pytest

from aiemaily.ownership.binding import owner_scope
from mail.models import Message
from mail.tasks import message_action
from secrets_vault.tasks import leases_issue
from tests.harness.cross_owner import assert_cross_owner_404
from tests.harness.mailservers import sample_messages
from tests.mail.test_sync_imap import _sync, connected, objects_dir  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db(databases=["default", "vault"])


@pytest.fixture
def synced(connected, dovecot):  # noqa: F811
    client, connection, user = connected
    dovecot.seed(user, sample_messages(3, malformed=False), seen_every=0)
    _sync(client, connection)
    with owner_scope(client.user):
        messages = list(Message.objects.for_owner(client.user).select_related("folder").order_by("uid"))
    return client, connection, user, messages


def _apply(client, connection, message, action, params):
    owner = client.user
    leases = leases_issue(str(owner.pk), str(connection.pk), {"imap_password": str(connection.imap_secret_id)})
    return message_action(leases, owner_id=str(owner.pk), message_id=str(message.pk), action=action, params=params)


def _server(dovecot, user, test_ca):
    conn = imaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port,
                             ssl_context=ssl.create_default_context(cafile=str(test_ca.ca_file)))
    conn.login(user, dovecot.password)
    return conn


def _queued(client, url, body=None, key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(url, body or {}, format="json", **headers)


def test_archive_moves_the_message_at_the_server_and_here(synced, dovecot, test_ca):
    client, connection, user, messages = synced
    target = messages[0]
    response = _queued(client, f"/api/v1/messages/{target.pk}/archive")
    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert _apply(client, connection, target, "archive", {})["status"] == "done"
    server = _server(dovecot, user, test_ca)
    server.select("INBOX")
    assert server.uid("SEARCH", None, "HEADER", "Message-ID", target.message_id)[1] == [b""]
    server.select("Archive")
    assert server.uid("SEARCH", None, "HEADER", "Message-ID", target.message_id)[1][0]
    server.logout()
    detail = client.get(f"/api/v1/messages/{target.pk}").json()
    assert detail["folder"] == "Archive"
    # A sync afterwards neither duplicates nor loses it.
    _sync(client, connection)
    with owner_scope(client.user):
        assert Message.objects.for_owner(client.user).filter(message_id=target.message_id).count() == 1


def test_labels_are_added_and_removed_at_the_server(synced, dovecot, test_ca):
    client, connection, user, messages = synced
    target = messages[1]
    assert _queued(client, f"/api/v1/messages/{target.pk}/labels", {"add": ["Work", "Urgent"]}).status_code == 202
    _apply(client, connection, target, "labels", {"add": ["Work", "Urgent"], "remove": []})
    with owner_scope(client.user):
        target.refresh_from_db()
    _apply(client, connection, target, "labels", {"add": [], "remove": ["Urgent"]})
    assert client.get(f"/api/v1/messages/{target.pk}").json()["labels"] == ["Work"]
    server = _server(dovecot, user, test_ca)
    server.select("INBOX")
    flags = server.uid("FETCH", str(target.uid), "(FLAGS)")[1][0].decode()
    assert "Work" in flags and "Urgent" not in flags
    server.logout()


def test_read_and_unread(synced, dovecot, test_ca):
    client, connection, user, messages = synced
    target = messages[2]
    assert target.unread
    _apply(client, connection, target, "read", {"unread": False})
    assert client.get(f"/api/v1/messages/{target.pk}").json()["unread"] is False
    server = _server(dovecot, user, test_ca)
    server.select("INBOX", readonly=True)
    assert "\\Seen" in server.uid("FETCH", str(target.uid), "(FLAGS)")[1][0].decode()
    server.logout()
    with owner_scope(client.user):
        target.refresh_from_db()
    _apply(client, connection, target, "read", {"unread": True})
    assert client.get(f"/api/v1/messages/{target.pk}").json()["unread"] is True


@pytest.mark.claim("idempotency")
def test_a_retried_action_request_is_queued_once(synced, django_capture_on_commit_callbacks, monkeypatch):
    client, connection, user, messages = synced
    sent = []
    monkeypatch.setattr("celery.canvas._chain.apply_async", lambda self, *a, **k: sent.append(self))
    key = str(uuid.uuid4())
    with django_capture_on_commit_callbacks(execute=True):
        first = _queued(client, f"/api/v1/messages/{messages[0].pk}/archive", key=key)
        again = _queued(client, f"/api/v1/messages/{messages[0].pk}/archive", key=key)
    assert first.status_code == again.status_code == 202 and again["Idempotent-Replayed"] == "true"
    assert len(sent) == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("labels", {"add": ["has space"]}),
        ("labels", {"add": ["\\Seen"]}),
        ("labels", {"add": []}),
        ("labels", {"add": ["A"], "remove": ["A"]}),
        ("labels", {"add": ["x" * 65]}),
        ("read", {}),
        ("read", {"unread": "sometimes"}),
    ],
)
def test_bad_action_input_is_400(synced, path, body):
    client, connection, user, messages = synced
    response = client.post(f"/api/v1/messages/{messages[0].pk}/{path}", body, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid"


@pytest.mark.claim("owner-scoping")
def test_another_users_message_is_404_for_every_action(synced, stranger):
    from rest_framework.test import APIClient

    from tests.conftest import issue_tokens

    client, connection, user, messages = synced
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(other, stranger)["access"])

    def snapshot():
        with owner_scope(client.user):
            return list(Message.objects.for_owner(client.user).values("id", "folder_id", "labels", "unread"))

    for action, body in (("archive", {}), ("labels", {"add": ["X"]}), ("read", {"unread": False})):
        assert_cross_owner_404(other, f"/api/v1/messages/{{id}}/{action}", messages[0].pk, snapshot=snapshot,
                               body=body)
