"""Sending exactly once through the outbox, with a real SMTP server counting deliveries and a real
Dovecot holding the Sent folder: retries, concurrent duplicates, a worker killed after DATA."""

import threading
import uuid

import pytest
from rest_framework.test import APIClient

from aiemaily.ownership.binding import owner_scope
from mail.models import OutboxMessage
from mail.send import outbox as outbox_module
from mail.tasks import outbox_send
from secrets_vault.crypto import SecretStr
from secrets_vault.tasks import leases_issue
from tests.conftest import issue_tokens
from tests.harness.concurrency import run_together
from tests.harness.outbox_helpers import (
    assert_stranger_cannot_send_from_or_see,
    outbox_row,
    post_outbox,
    worker_killed_before_marking_sent,
)

pytestmark = [pytest.mark.django_db(databases=["default", "vault"]), pytest.mark.claim("exactly-once-send")]


@pytest.fixture
def sender(auth_client, mail_settings, dovecot, smtp_server, settings, tmp_path):
    from mail import blobstore, services
    from mail.tasks import connection_verify

    settings.AIEMAILY_OBJECTS_DIR = tmp_path / "objects"
    blobstore._storage.cache_clear()
    user, password = dovecot.add_user()
    smtp_server.add_user(user, password)
    server = {"host": "localhost", "port": dovecot.imaps_port, "security": "tls", "username": user,
              "password": SecretStr(password)}
    owner = auth_client.user
    with owner_scope(owner):
        connection = services.connection_create_imap(owner=owner, email=user, imap=server,
                                                     smtp=dict(server, port=smtp_server.tls_port))
    ids = {"imap_password": str(connection.imap_secret_id), "smtp_password": str(connection.smtp_secret_id)}
    connection_verify(leases_issue(str(owner.pk), str(connection.pk), ids), owner_id=str(owner.pk),
                      connection_id=str(connection.pk))
    yield auth_client, connection, ids
    blobstore._storage.cache_clear()


def _run(client, connection, ids, outbox_id):
    owner = client.user
    leases = leases_issue(str(owner.pk), str(connection.pk), ids)
    return outbox_send(leases, owner_id=str(owner.pk), outbox_id=str(outbox_id))


def _deliveries(smtp_server, message_id):
    return [m for m in smtp_server.messages if f"Message-ID: {message_id}".encode() in m.original_content]


def test_send_is_recorded_then_delivered_once_and_kept_in_sent(sender, smtp_server, dovecot):
    client, connection, ids = sender
    response = post_outbox(client, connection)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["message_id"].startswith("<")
    assert _run(client, connection, ids, body["id"])["status"] == "sent"
    assert len(_deliveries(smtp_server, body["message_id"])) == 1
    assert client.get(f"/api/v1/outbox/{body['id']}").json()["status"] == "sent"
    # the copy in Sent is what reconciliation looks for
    from mail.providers.mailservers import imap_client
    from mail.send.outbox import _in_sent_folder

    with imap_client("localhost", dovecot.imaps_port, "tls", connection.imap_username,
                     SecretStr(dovecot.password)) as imap:
        assert _in_sent_folder(imap, body["message_id"])


def test_running_the_send_task_again_sends_nothing(sender, smtp_server):
    client, connection, ids = sender
    body = post_outbox(client, connection).json()
    for _ in range(3):
        _run(client, connection, ids, body["id"])
    assert len(_deliveries(smtp_server, body["message_id"])) == 1


@pytest.mark.django_db(transaction=True, databases=["default", "vault"])
def test_concurrent_duplicate_task_deliveries_send_once(sender, smtp_server):
    client, connection, ids = sender
    body = post_outbox(client, connection).json()
    results, errors = run_together(lambda: _run(client, connection, ids, body["id"])["status"], 5)
    assert errors == []
    assert len(_deliveries(smtp_server, body["message_id"])) == 1
    assert sorted(results) == ["sent", "skipped", "skipped", "skipped", "skipped"]


def test_a_worker_killed_after_data_is_settled_from_the_sent_folder_and_never_resent(sender, smtp_server,
                                                                                      monkeypatch, settings):
    client, connection, ids = sender
    body = post_outbox(client, connection).json()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("worker killed right after the server accepted DATA")

    monkeypatch.setattr(outbox_module, "_after_accept", killed)
    with pytest.raises(KeyboardInterrupt):
        _run(client, connection, ids, body["id"])
    assert outbox_row(client, body["id"]).status == "sending"
    monkeypatch.undo()
    # Redelivered at once: another worker may still be sending, so nothing happens.
    assert _run(client, connection, ids, body["id"])["status"] == "skipped"
    assert outbox_row(client, body["id"]).status == "sending"
    settings.AIEMAILY_SEND_STALE_SECONDS = 0
    # Stale: it becomes uncertain, and the Sent folder (no copy: the worker died first) decides.
    assert _run(client, connection, ids, body["id"])["status"] == "failed"
    row = outbox_row(client, body["id"])
    assert row.status == "failed" and "not in your Sent folder" in row.last_error
    assert _run(client, connection, ids, body["id"])["status"] == "skipped"
    assert len(_deliveries(smtp_server, body["message_id"])) == 1


def test_a_worker_killed_after_the_sent_copy_reconciles_to_sent(sender, smtp_server, monkeypatch, settings):
    client, connection, ids = sender
    body = post_outbox(client, connection).json()
    worker_killed_before_marking_sent(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        _run(client, connection, ids, body["id"])
    monkeypatch.undo()
    settings.AIEMAILY_SEND_STALE_SECONDS = 0
    assert _run(client, connection, ids, body["id"])["status"] == "sent"
    assert len(_deliveries(smtp_server, body["message_id"])) == 1


@pytest.mark.claim("idempotency")
def test_a_retried_request_with_the_same_key_is_one_message(sender, smtp_server):
    client, connection, ids = sender
    key = str(uuid.uuid4())
    first = post_outbox(client, connection, key=key)
    retry = post_outbox(client, connection, key=key)  # the client never saw the first response
    assert first.status_code == retry.status_code == 202
    assert retry["Idempotent-Replayed"] == "true" and retry.json() == first.json()
    with owner_scope(client.user):
        assert OutboxMessage.objects.for_owner(client.user).count() == 1
    _run(client, connection, ids, first.json()["id"])
    assert len(_deliveries(smtp_server, first.json()["message_id"])) == 1


@pytest.mark.claim("idempotency")
def test_the_same_key_with_another_body_is_422_and_sends_nothing(sender):
    client, connection, ids = sender
    key = str(uuid.uuid4())
    assert post_outbox(client, connection, key=key).status_code == 202
    other = post_outbox(client, connection, key=key, subject="Something else")
    assert other.status_code == 422
    with owner_scope(client.user):
        assert OutboxMessage.objects.for_owner(client.user).count() == 1


@pytest.mark.django_db(transaction=True, databases=["default", "vault"])
@pytest.mark.claim("idempotency")
def test_fifty_concurrent_identical_sends_with_one_key_deliver_once(sender, smtp_server, live_server):
    import json
    import urllib.error
    import urllib.request

    client, connection, ids = sender
    token = issue_tokens(APIClient(), client.user)["access"]
    key = str(uuid.uuid4())
    payload = json.dumps({"connection": str(connection.pk), "to": ["friend@example.test"], "cc": [],
                          "subject": "Once only", "body_text": "exactly once"}).encode()
    statuses, bodies = [], []

    def post():
        request = urllib.request.Request(f"{live_server.url}/api/v1/outbox", data=payload, method="POST", headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json", "Idempotency-Key": key})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the test server
                statuses.append(response.status)
                bodies.append(json.loads(response.read()))
        except urllib.error.HTTPError as error:
            statuses.append(error.code)

    threads = [threading.Thread(target=post) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(statuses) <= {202, 409} and 202 in statuses, statuses
    assert len({b["id"] for b in bodies}) == 1
    with owner_scope(client.user):
        rows = list(OutboxMessage.objects.for_owner(client.user))
    assert len(rows) == 1
    _run(client, connection, ids, rows[0].pk)
    _run(client, connection, ids, rows[0].pk)
    assert len(_deliveries(smtp_server, rows[0].message_id)) == 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"subject": "Hi\r\nBcc: victim@example.test"}, "subject"),
        ({"to": []}, "to"),
        ({"to": ["not an address"]}, "to"),
        ({"in_reply_to": "<a@b>\nX-Evil: 1"}, "in_reply_to"),
        ({"body_text": "x" * 1_000_001}, "body_text"),
    ],
)
def test_bad_input_is_400_and_nothing_is_queued(sender, overrides, field):
    client, connection, ids = sender
    response = post_outbox(client, connection, **overrides)
    assert response.status_code == 400 and field in response.json()["error"]["fields"]
    with owner_scope(client.user):
        assert not OutboxMessage.objects.for_owner(client.user).exists()


def test_an_smtp_login_failure_is_failed_with_a_reason(sender, smtp_server):
    client, connection, ids = sender
    body = post_outbox(client, connection).json()
    smtp_server.users[connection.smtp_username] = "changed-meanwhile"
    assert _run(client, connection, ids, body["id"])["status"] == "failed"
    row = outbox_row(client, body["id"])
    assert "rejected the user name or password" in row.last_error
    assert not _deliveries(smtp_server, body["message_id"])


@pytest.mark.claim("owner-scoping")
def test_another_user_cannot_send_from_or_see_my_outbox(sender, stranger):
    client, connection, ids = sender
    body = post_outbox(client, connection).json()
    assert_stranger_cannot_send_from_or_see(client, connection, body["id"], stranger)


@pytest.mark.django_db(transaction=True, databases=["default", "vault"])
@pytest.mark.claim("idempotency")
def test_a_client_that_drops_the_connection_and_retries_sends_once(sender, smtp_server, live_server):
    """The client sends the request, hangs up without reading the answer, and retries with the same key."""
    import json
    import socket
    import time
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    client, connection, ids = sender
    token = issue_tokens(APIClient(), client.user)["access"]
    key = str(uuid.uuid4())
    payload = json.dumps({"connection": str(connection.pk), "to": ["friend@example.test"], "cc": [],
                          "subject": "Dropped", "body_text": "once"}).encode()
    address = urlsplit(live_server.url)
    raw = (f"POST /api/v1/outbox HTTP/1.1\r\nHost: {address.hostname}:{address.port}\r\n"
           f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\nIdempotency-Key: {key}\r\n"
           f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n").encode() + payload
    with socket.create_connection((address.hostname, address.port)) as sock:
        sock.sendall(raw)  # ...and hang up without reading a byte of the answer
    from tests.harness.processes import wait_for

    def abandoned_request_done():
        with owner_scope(client.user):
            return OutboxMessage.objects.for_owner(client.user).exists()

    wait_for(abandoned_request_done, timeout=20, what="the server to finish the abandoned request")
    deadline, retried = time.monotonic() + 20, None
    while time.monotonic() < deadline:
        request = urllib.request.Request(f"{live_server.url}/api/v1/outbox", data=payload, method="POST", headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json", "Idempotency-Key": key})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the test server
                retried = (response.status, response.headers.get("Idempotent-Replayed"), json.loads(response.read()))
                break
        except urllib.error.HTTPError as error:  # 409 while the first one is still running
            assert error.code == 409
            time.sleep(0.2)
    assert retried is not None and retried[0] == 202
    time.sleep(0.5)
    with owner_scope(client.user):
        rows = list(OutboxMessage.objects.for_owner(client.user))
    assert len(rows) == 1 and rows[0].pk == uuid.UUID(retried[2]["id"])
    # The abandoned request ran to completion first, so the retry was its replay.
    assert retried[1] == "true"
    _run(client, connection, ids, rows[0].pk)
    assert len(_deliveries(smtp_server, rows[0].message_id)) == 1


@pytest.mark.django_db(transaction=True, databases=["default", "vault"])
def test_a_real_worker_killed_during_data_leaves_sending_and_the_retry_never_resends(sender, smtp_server, tmp_path,
                                                                                     test_ca, settings):
    """SIGKILL to a real worker-sync process the moment the SMTP server has the message."""
    import os
    import signal

    from tests.harness.processes import Worker, wait_for

    client, connection, ids = sender
    extra = {"AIEMAILY_MAIL_CA_BUNDLE": str(test_ca.ca_file), "AIEMAILY_ALLOWED_PRIVATE_HOSTS": "127.0.0.1,localhost",
             "AIEMAILY_OBJECTS_DIR": str(settings.AIEMAILY_OBJECTS_DIR)}
    vault = Worker("vault", "vault", tmp_path / "vault.log", extra)
    sync = Worker("sync", "sync", tmp_path / "sync.log", extra)
    try:
        vault.wait_ready()
        sync.wait_ready()
        smtp_server.on_data = lambda: os.kill(sync.process.pid, signal.SIGKILL)
        body = post_outbox(client, connection).json()  # on commit: leases (worker-vault) → send (worker-sync)
        wait_for(lambda: sync.process.poll() is not None, timeout=60, what="the worker to be killed mid-send")
    finally:
        smtp_server.on_data = None
        vault.stop()
        sync.stop()
    assert sync.process.returncode == -signal.SIGKILL
    assert len(_deliveries(smtp_server, body["message_id"])) == 1
    assert outbox_row(client, body["id"]).status == "sending"  # committed before DATA, never marked sent
    # The task comes back (broker redelivery, or beat): it reconciles instead of sending again.
    settings.AIEMAILY_SEND_STALE_SECONDS = 0
    assert _run(client, connection, ids, body["id"])["status"] == "failed"  # not in Sent: it died before the copy
    assert _run(client, connection, ids, body["id"])["status"] == "skipped"
    assert len(_deliveries(smtp_server, body["message_id"])) == 1
