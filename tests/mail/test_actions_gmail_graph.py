"""Archive, labels and read/unread for Gmail (users.messages.modify, users.labels.create) and
Microsoft Graph (move to the well-known archive folder, PATCH isRead / categories), against the local
fake APIs: the fake provider's state is asserted, then our row; retries change nothing more; a
refused token marks the connection needs_reauth; another user's message is 404 for every action.
"""

import uuid

import pytest
from rest_framework.test import APIClient

from aiemaily.ownership.binding import owner_scope
from mail.models import Connection, Message
from mail.tasks import message_action
from tests.conftest import issue_tokens
from tests.harness.cross_owner import assert_cross_owner_404
from tests.harness.factories import stored_secret
from tests.mail.test_sync_gmail import gmail, gmail_server, lease_for, mail, objects_dir  # noqa: F401 - fixtures
from tests.mail.test_sync_gmail import sync as gmail_sync_run
from tests.mail.test_sync_graph import graph, graph_server  # noqa: F401 - fixtures
from tests.mail.test_sync_graph import sync as graph_sync_run

pytestmark = pytest.mark.django_db(databases=["default", "vault"])


def _connection(owner, provider):
    with owner_scope(owner):
        return Connection.objects.create(
            owner=owner, provider=provider, email="ada@mail.test", status="active",
            oauth_secret=stored_secret(owner, "refresh", purpose="oauth_refresh_token"))


def _message(owner, provider_id) -> Message:
    with owner_scope(owner):
        return Message.objects.for_owner(owner).select_related("folder").get(provider_id=provider_id)


def _apply(owner, connection, message, action, params, token):
    return message_action(lease_for(owner.pk, connection.pk, token), owner_id=str(owner.pk),
                          message_id=str(message.pk), action=action, params=params)


@pytest.fixture
def gmail_synced(gmail, auth_client):  # noqa: F811
    owner = auth_client.user
    connection = _connection(owner, "gmail")
    ids = [gmail.add(mail(n)) for n in range(2)]
    assert gmail_sync_run(owner, connection, gmail.token)["status"] == "synced"
    return auth_client, connection, gmail, ids


@pytest.fixture
def graph_synced(graph, auth_client):  # noqa: F811
    owner = auth_client.user
    connection = _connection(owner, "microsoft")
    ids = [graph.add("inbox", mail(n), categories=["Blue"]) for n in range(2)]
    assert graph_sync_run(owner, connection, graph.token)["status"] == "synced"
    return auth_client, connection, graph, ids


def test_gmail_archive_removes_inbox_there_then_here(gmail_synced):
    client, connection, server, ids = gmail_synced
    row = _message(client.user, ids[0])
    assert client.post(f"/api/v1/messages/{row.pk}/archive", {}, format="json").status_code == 202
    for _ in range(2):  # a retried task changes nothing more
        assert _apply(client.user, connection, row, "archive", {}, server.token)["status"] == "done"
    assert "INBOX" not in server.messages[ids[0]].labels
    modify = [r for r in server.requests if r.path.endswith("/modify")]
    assert modify[0].json() == {"addLabelIds": [], "removeLabelIds": ["INBOX"]}
    row = _message(client.user, ids[0])
    assert row.folder.name == "[Gmail]/All Mail" and "INBOX" not in row.labels
    assert client.get(f"/api/v1/messages/{row.pk}").json()["folder"] == "[Gmail]/All Mail"
    # The next sync agrees and keeps one row.
    assert gmail_sync_run(client.user, connection, server.token)["status"] == "synced"
    assert _message(client.user, ids[0]).folder.name == "[Gmail]/All Mail"


def test_gmail_read_and_unread(gmail_synced):
    client, connection, server, ids = gmail_synced
    row = _message(client.user, ids[1])
    assert row.unread
    assert _apply(client.user, connection, row, "read", {"unread": False}, server.token)["status"] == "done"
    assert "UNREAD" not in server.messages[ids[1]].labels and not _message(client.user, ids[1]).unread
    assert _apply(client.user, connection, row, "read", {"unread": True}, server.token)["status"] == "done"
    assert "UNREAD" in server.messages[ids[1]].labels and _message(client.user, ids[1]).unread


def test_gmail_labels_use_label_ids_and_create_missing_labels(gmail_synced):
    client, connection, server, ids = gmail_synced
    row = _message(client.user, ids[0])
    params = {"add": ["Work", "Travel"], "remove": []}
    assert client.post(f"/api/v1/messages/{row.pk}/labels", params, format="json").status_code == 202
    assert _apply(client.user, connection, row, "labels", params, server.token)["status"] == "done"
    travel = next(k for k, v in server.user_labels.items() if v == "Travel")
    assert {"Label_1", travel} <= set(server.messages[ids[0]].labels)  # Work is Label_1
    assert len([r for r in server.requests if r.method == "POST" and r.path.endswith("/labels")]) == 1
    # Again (a retry): the label exists now, nothing is created twice.
    assert _apply(client.user, connection, row, "labels", params, server.token)["status"] == "done"
    assert list(server.user_labels.values()).count("Travel") == 1
    assert {"Label_1", travel} <= set(_message(client.user, ids[0]).labels)
    assert _apply(client.user, connection, row, "labels", {"add": [], "remove": ["Work"]},
                  server.token)["status"] == "done"
    assert "Label_1" not in server.messages[ids[0]].labels and "Label_1" not in _message(client.user, ids[0]).labels


def test_graph_archive_moves_to_the_archive_folder_there_then_here(graph_synced):
    client, connection, server, ids = graph_synced
    row = _message(client.user, ids[0])
    assert client.post(f"/api/v1/messages/{row.pk}/archive", {}, format="json").status_code == 202
    for _ in range(2):
        assert _apply(client.user, connection, row, "archive", {}, server.token)["status"] == "done"
    assert server.messages[ids[0]].folder == server.well_known["archive"]
    move = [r for r in server.requests if r.path.endswith("/move")]
    assert move[0].json() == {"destinationId": "archive"}
    row = _message(client.user, ids[0])
    assert row.folder.role == "archive"
    # The next delta round re-files nothing and deletes nothing.
    assert graph_sync_run(client.user, connection, server.token)["status"] == "synced"
    assert _message(client.user, ids[0]).folder.role == "archive"


def test_graph_read_and_categories(graph_synced):
    client, connection, server, ids = graph_synced
    row = _message(client.user, ids[1])
    assert _apply(client.user, connection, row, "read", {"unread": False}, server.token)["status"] == "done"
    assert server.messages[ids[1]].is_read and not _message(client.user, ids[1]).unread
    params = {"add": ["Work"], "remove": ["Blue"]}
    assert _apply(client.user, connection, row, "labels", params, server.token)["status"] == "done"
    assert server.messages[ids[1]].categories == ["Work"] and _message(client.user, ids[1]).labels == ["Work"]
    patches = [r.json() for r in server.requests if r.method == "PATCH"]
    assert patches == [{"isRead": True}, {"categories": ["Work"]}]


@pytest.mark.parametrize("provider", ["gmail", "microsoft"])
def test_throttling_is_retried_later_and_a_refused_token_needs_reauth(provider, request, caplog):
    client, connection, server, ids = request.getfixturevalue(f"{'gmail' if provider == 'gmail' else 'graph'}_synced")
    row = _message(client.user, ids[0])
    server.fail("/modify" if provider == "gmail" else "/move", 429)
    assert _apply(client.user, connection, row, "archive", {}, server.token)["status"] == "retrying"
    bad = f"revoked-{uuid.uuid4().hex}"
    result = _apply(client.user, connection, row, "archive", {}, bad)
    assert result == {"message_id": str(row.pk), "status": "failed", "code": "auth_failed"}
    with owner_scope(client.user):
        assert Connection.objects.for_owner(client.user).get(pk=connection.pk).status == "needs_reauth"
    assert _message(client.user, ids[0]).folder_id == row.folder_id  # nothing reflected
    assert bad not in caplog.text and server.token not in caplog.text


@pytest.mark.claim("owner-scoping")
@pytest.mark.parametrize("provider", ["gmail", "microsoft"])
def test_another_user_cannot_act_on_my_oauth_messages(provider, request, stranger):
    client, connection, server, ids = request.getfixturevalue(f"{'gmail' if provider == 'gmail' else 'graph'}_synced")
    row = _message(client.user, ids[0])
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(other, stranger)["access"])

    def snapshot():
        with owner_scope(client.user):
            return list(Message.objects.for_owner(client.user).values("id", "folder_id", "labels", "unread"))

    for action, body in (("archive", {}), ("labels", {"add": ["X"]}), ("read", {"unread": False})):
        assert_cross_owner_404(other, f"/api/v1/messages/{{id}}/{action}", row.pk, snapshot=snapshot, body=body)
    # A task run with the stranger as owner finds nothing and calls nothing.
    before = len(server.requests)
    result = message_action(lease_for(stranger.pk, connection.pk, server.token), owner_id=str(stranger.pk),
                            message_id=str(row.pk), action="archive", params={})
    assert result["status"] == "gone" and len(server.requests) == before
