"""Sending exactly once through the outbox for Gmail (users.messages.send) and Microsoft Graph
(sendMail, MIME), against the local fake APIs (tests/harness/gmail_api_server.py, tests/harness/graph_api_server.py),
which file every accepted message in Sent as the real services do. Each test counts the messages in
the fake provider's Sent carrying our Message-ID: exactly one, however the send is retried.

The pytest process plays every role: the access-token lease is sealed here as worker-vault would,
and outbox_send runs as worker-sync would after the chain.
"""

import uuid

import pytest

from aiemaily.ownership.binding import owner_scope
from mail.models import Connection, OutboxMessage
from mail.tasks import outbox_send
from tests.harness.concurrency import run_together
from tests.harness.factories import stored_secret
from tests.harness.outbox_helpers import (
    assert_stranger_cannot_send_from_or_see,
    outbox_row,
    post_outbox,
    worker_killed_before_marking_sent,
)
from tests.mail.test_sync_gmail import gmail, gmail_server, lease_for, objects_dir  # noqa: F401 - fixtures
from tests.mail.test_sync_graph import graph, graph_server  # noqa: F401 - fixtures

pytestmark = [pytest.mark.django_db(databases=["default", "vault"]), pytest.mark.claim("exactly-once-send")]


@pytest.fixture(params=["gmail", "microsoft"])
def provider(request):
    """(provider name, its fake server): every test runs against both."""
    server = request.getfixturevalue("gmail" if request.param == "gmail" else "graph")
    return request.param, server


@pytest.fixture
def sender(provider, auth_client):
    name, server = provider
    owner = auth_client.user
    with owner_scope(owner):
        connection = Connection.objects.create(
            owner=owner, provider=name, email="ada@mail.test", status="active",
            oauth_secret=stored_secret(owner, "refresh", purpose="oauth_refresh_token"))
    return auth_client, connection, server


def _run(client, connection, server, outbox_id, token=None):
    owner = client.user
    lease = lease_for(owner.pk, connection.pk, token or server.token)
    return outbox_send(lease, owner_id=str(owner.pk), outbox_id=str(outbox_id))["status"]


def _send_calls(server):
    return [r for r in server.requests if r.method == "POST" and r.path.endswith(("/messages/send", "/sendMail"))]


def test_a_send_is_delivered_once_with_our_message_id(sender):
    client, connection, server = sender
    response = post_outbox(client, connection)
    assert response.status_code == 202
    body = response.json()
    assert _run(client, connection, server, body["id"]) == "sent"
    sent = server.sent_with(body["message_id"])
    assert len(sent) == 1 and b"Shall we meet at noon?" in sent[0].raw
    assert client.get(f"/api/v1/outbox/{body['id']}").json()["status"] == "sent"
    call = _send_calls(server)[0]
    if connection.provider == "microsoft":
        assert call.headers["content-type"].startswith("text/plain")  # the MIME send keeps our headers


def test_running_the_send_task_again_sends_nothing(sender):
    client, connection, server = sender
    body = post_outbox(client, connection).json()
    assert [_run(client, connection, server, body["id"]) for _ in range(3)] == ["sent", "skipped", "skipped"]
    assert len(server.sent_with(body["message_id"])) == 1 and len(_send_calls(server)) == 1


@pytest.mark.django_db(transaction=True, databases=["default", "vault"])
def test_concurrent_duplicate_task_runs_send_once(sender):
    client, connection, server = sender
    body = post_outbox(client, connection).json()
    results, errors = run_together(lambda: _run(client, connection, server, body["id"]), 5)
    assert errors == []
    assert sorted(results) == ["sent", "skipped", "skipped", "skipped", "skipped"]
    assert len(server.sent_with(body["message_id"])) == 1 and len(_send_calls(server)) == 1


def test_an_answer_lost_after_the_provider_accepted_is_reconciled_from_sent(sender):
    client, connection, server = sender
    body = post_outbox(client, connection).json()
    server.drop_answer("send")  # Gmail's messages/send and Graph's sendMail: accepted, then the line drops
    assert _run(client, connection, server, body["id"]) == "checking"
    assert outbox_row(client, body["id"]).status == "uncertain"
    # The follow-up run only looks in Sent: no second send call reaches the provider.
    assert _run(client, connection, server, body["id"]) == "sent"
    assert outbox_row(client, body["id"]).status == "sent"
    assert len(server.sent_with(body["message_id"])) == 1 and len(_send_calls(server)) == 1


def test_a_worker_killed_after_the_provider_accepted_is_reconciled_not_resent(sender, monkeypatch, settings):
    client, connection, server = sender
    body = post_outbox(client, connection).json()
    worker_killed_before_marking_sent(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _run(client, connection, server, body["id"])
    monkeypatch.undo()
    assert outbox_row(client, body["id"]).status == "sending"
    assert _run(client, connection, server, body["id"]) == "skipped"  # maybe still sending elsewhere
    settings.AIEMAILY_SEND_STALE_SECONDS = 0
    assert _run(client, connection, server, body["id"]) == "sent"
    assert len(server.sent_with(body["message_id"])) == 1 and len(_send_calls(server)) == 1


def test_a_5xx_is_never_resent_and_stays_uncertain_when_not_in_sent(sender):
    client, connection, server = sender
    body = post_outbox(client, connection).json()
    server.fail("send", 500)  # the fake refuses before storing: Sent stays empty
    assert _run(client, connection, server, body["id"]) == "checking"
    assert _run(client, connection, server, body["id"]) == "uncertain"
    row = outbox_row(client, body["id"])
    assert row.status == "uncertain" and "not in your Sent folder" in row.last_error
    assert len(_send_calls(server)) == 1 and not server.sent_with(body["message_id"])


def test_throttling_before_acceptance_requeues_and_sends_once(sender):
    client, connection, server = sender
    body = post_outbox(client, connection).json()
    server.fail("send", 429, headers={"Retry-After": "1"})
    assert _run(client, connection, server, body["id"]) == "retry"
    row = outbox_row(client, body["id"])
    assert row.status == "queued" and "HTTP 429" in row.last_error
    assert _run(client, connection, server, body["id"]) == "sent"
    assert len(server.sent_with(body["message_id"])) == 1


def test_a_refusal_is_failed_with_a_readable_reason(sender):
    client, connection, server = sender
    body = post_outbox(client, connection).json()
    server.fail("send", 400, reason="invalidArgument")
    assert _run(client, connection, server, body["id"]) == "failed"
    row = outbox_row(client, body["id"])
    assert row.status == "failed" and "refused to send this message (HTTP 400: invalidArgument)" in row.last_error
    assert _run(client, connection, server, body["id"]) == "skipped"
    assert not server.sent_with(body["message_id"])


def test_a_refused_token_fails_the_send_and_marks_the_connection_needs_reauth(sender, caplog):
    client, connection, server = sender
    body = post_outbox(client, connection).json()
    bad = f"revoked-{uuid.uuid4().hex}"
    assert _run(client, connection, server, body["id"], token=bad) == "failed"
    row = outbox_row(client, body["id"])
    assert row.status == "failed" and "sign in again" in row.last_error and bad not in row.last_error
    with owner_scope(client.user):
        assert Connection.objects.for_owner(client.user).get(pk=connection.pk).status == "needs_reauth"
    assert not server.sent_with(body["message_id"])
    assert bad not in caplog.text and server.token not in caplog.text


@pytest.mark.claim("idempotency")
def test_a_retried_request_with_the_same_key_is_one_message(sender):
    client, connection, server = sender
    key = str(uuid.uuid4())
    first = post_outbox(client, connection, key=key)
    retry = post_outbox(client, connection, key=key)
    assert first.status_code == retry.status_code == 202
    assert retry["Idempotent-Replayed"] == "true" and retry.json() == first.json()
    with owner_scope(client.user):
        assert OutboxMessage.objects.for_owner(client.user).count() == 1
    _run(client, connection, server, first.json()["id"])
    _run(client, connection, server, first.json()["id"])
    assert len(server.sent_with(first.json()["message_id"])) == 1


def test_a_connection_not_signed_in_cannot_send(sender):
    client, connection, server = sender
    with owner_scope(client.user):
        Connection.objects.for_owner(client.user).filter(pk=connection.pk).update(oauth_secret=None)
    assert post_outbox(client, connection).status_code == 400


@pytest.mark.claim("owner-scoping")
def test_another_user_cannot_send_from_or_see_my_oauth_outbox(sender, stranger):
    client, connection, server = sender
    body = post_outbox(client, connection).json()
    assert_stranger_cannot_send_from_or_see(client, connection, body["id"], stranger)
    # A task run with the stranger as owner finds nothing and sends nothing.
    lease = lease_for(stranger.pk, connection.pk, server.token)
    assert outbox_send(lease, owner_id=str(stranger.pk), outbox_id=body["id"])["status"] == "gone"
    assert not _send_calls(server)


def test_a_lease_that_does_not_open_sends_nothing_and_stays_queued(sender):
    client, connection, server = sender
    body = post_outbox(client, connection).json()
    lease = lease_for(client.user.pk, uuid.uuid4(), server.token)  # bound to another connection
    assert outbox_send(lease, owner_id=str(client.user.pk), outbox_id=body["id"])["status"] == "retry"
    row = outbox_row(client, body["id"])
    assert row.status == "queued" and row.attempts == 1 and not _send_calls(server)
    assert _run(client, connection, server, body["id"]) == "sent"
    assert len(server.sent_with(body["message_id"])) == 1
