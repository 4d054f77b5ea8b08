"""A send whose answer never comes is never resent and never called failed without a look in Sent.

A real SMTP server (aiosmtpd, tests/harness/mailservers.py) misbehaves after DATA the way servers and
networks do: it stores the message and answers only after the client gave up, stores it and hangs
up, or hangs up in the middle of the data. A real Dovecot holds the Sent folder, filled or not by
the server as some servers do. Deliveries are counted at the SMTP server; the row's final state
must match what the Sent folder shows.
"""

import imaplib
import os
import signal
import ssl

import pytest

from mail.send import outbox as outbox_module
from tests.harness.outbox_helpers import outbox_row, post_outbox
from tests.mail import test_outbox
from tests.mail.test_outbox import _deliveries, _run

sender = test_outbox.sender  # the same fixture: a verified IMAP/SMTP connection on Dovecot and aiosmtpd

pytestmark = [pytest.mark.django_db(databases=["default", "vault"]), pytest.mark.claim("exactly-once-send")]


def _filer(dovecot, test_ca, user):
    """A server-side hook that files what the SMTP server received in the user's Sent folder."""

    def file_in_sent(raw: bytes) -> None:
        context = ssl.create_default_context(cafile=str(test_ca.ca_file))
        with imaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port, ssl_context=context) as imap:
            imap.login(user, dovecot.password)
            imap.create("Sent")  # answers NO when it exists already
            status, _ = imap.append("Sent", r"(\Seen)", None, raw)
            assert status == "OK"

    return file_in_sent


@pytest.fixture
def misbehaving(smtp_server, monkeypatch):
    """The session's SMTP server with a short client timeout; back to good behaviour afterwards."""
    monkeypatch.setattr(outbox_module, "SMTP_TIMEOUT", 2)
    yield smtp_server
    smtp_server.behave(None)


STORED = {"answer_late": 1, "close_after_store": 1, "drop_during_data": 0}


@pytest.mark.parametrize("filed", [True, False], ids=["in-sent", "not-in-sent"])
@pytest.mark.parametrize("behaviour", list(STORED))
def test_a_lost_answer_after_data_is_reconciled_from_sent_and_never_resent(sender, misbehaving, dovecot, test_ca,
                                                                           settings, behaviour, filed):
    client, connection, ids = sender
    filing = _filer(dovecot, test_ca, connection.imap_username) if filed else None
    misbehaving.behave(behaviour, filing=filing, late_seconds=6)
    body = post_outbox(client, connection).json()
    first = _run(client, connection, ids, body["id"])["status"]
    misbehaving.behave(None)  # a well-behaved server from here on: a resend would get through
    assert len(_deliveries(misbehaving, body["message_id"])) == STORED[behaviour]
    row = outbox_row(client, body["id"])
    assert row.attempts == 1 and row.checked_at is not None  # looked at once, right away
    if filed:
        assert first == "sent" and row.status == "sent" and row.last_error == ""
    else:
        # Not re-queued, not failed: uncertain until the Sent folder has had its time.
        assert first == "uncertain" and row.status == "uncertain" and row.last_error == outbox_module.NOT_YET
        assert _run(client, connection, ids, body["id"])["status"] == "uncertain"
        settings.AIEMAILY_SEND_STALE_SECONDS = 0
        assert _run(client, connection, ids, body["id"])["status"] == "failed"
        row = outbox_row(client, body["id"])
        assert row.status == "failed" and row.last_error == outbox_module.NOT_CONFIRMED
    for _ in range(2):
        assert _run(client, connection, ids, body["id"])["status"] == "skipped"
    assert len(_deliveries(misbehaving, body["message_id"])) == STORED[behaviour]  # never a second one


def test_an_answer_that_arrives_late_is_not_reported_as_failed(sender, misbehaving, dovecot, test_ca):
    """The report's scenario: 250 after the client's timeout. Before the fix the row said "failed"."""
    client, connection, ids = sender
    misbehaving.behave("answer_late", filing=_filer(dovecot, test_ca, connection.imap_username), late_seconds=4)
    body = post_outbox(client, connection).json()
    assert _run(client, connection, ids, body["id"])["status"] == "sent"
    assert "answered unexpectedly" not in outbox_row(client, body["id"]).last_error


def test_a_refusal_after_the_data_is_failed_at_once_and_never_resent(sender, misbehaving):
    """An explicit 5xx to the end of data is the server's answer: it did not take the message."""
    client, connection, ids = sender
    misbehaving.behave("refuse")
    body = post_outbox(client, connection).json()
    assert _run(client, connection, ids, body["id"])["status"] == "failed"
    row = outbox_row(client, body["id"])
    assert row.status == "failed" and "refused it (SMTP 554)" in row.last_error
    misbehaving.behave(None)
    assert _run(client, connection, ids, body["id"])["status"] == "skipped"
    assert not _deliveries(misbehaving, body["message_id"])


def test_an_unreachable_sent_folder_leaves_the_send_uncertain_however_late(sender, misbehaving, settings):
    client, connection, ids = sender
    misbehaving.behave("close_after_store")
    body = post_outbox(client, connection).json()
    settings.AIEMAILY_SEND_STALE_SECONDS = 0
    with _imap_down(connection):
        assert _run(client, connection, ids, body["id"])["status"] == "uncertain"
        assert _run(client, connection, ids, body["id"])["status"] == "uncertain"
    row = outbox_row(client, body["id"])
    assert row.status == "uncertain" and "could not check your Sent folder" in row.last_error
    misbehaving.behave(None)
    # Once the folder can be read, absence decides.
    assert _run(client, connection, ids, body["id"])["status"] == "failed"
    assert len(_deliveries(misbehaving, body["message_id"])) == 1


class _imap_down:  # noqa: N801 - reads as a phrase in `with`
    """Point the connection's IMAP port at a closed port for the block (a Sent folder out of reach)."""

    def __init__(self, connection):
        from tests.harness.system import free_port

        self.connection, self.port = connection, free_port()

    def _port(self, port):
        from aiemaily.ownership.binding import owner_scope
        from mail.models import Connection

        with owner_scope(self.connection.owner_id):
            Connection.objects.for_owner(self.connection.owner_id).filter(pk=self.connection.pk).update(imap_port=port)

    def __enter__(self):
        self.real = self.connection.imap_port
        self._port(self.port)

    def __exit__(self, *exc):
        self._port(self.real)


# --- beat: rows nobody comes back to ----------------------------------------------------------------

@pytest.mark.django_db(transaction=True, databases=["default", "vault", "maintenance"])
def test_beat_queues_a_look_only_for_sends_stuck_past_the_stale_period(sender, settings, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from mail.tasks import outbox_reconcile_due

    client, connection, ids = sender
    settings.AIEMAILY_SEND_STALE_SECONDS = 600
    now = timezone.now()
    old, fresh = now - timedelta(seconds=700), now - timedelta(seconds=60)
    states = {
        "stuck_sending": dict(status="sending", sending_started_at=old),
        "stuck_uncertain": dict(status="uncertain", sending_started_at=old, checked_at=None),
        "looked_at_long_ago": dict(status="uncertain", sending_started_at=old, checked_at=old),
        "just_looked_at": dict(status="uncertain", sending_started_at=old, checked_at=fresh),
        "still_sending": dict(status="sending", sending_started_at=fresh),
        "sent": dict(status="sent", sending_started_at=old),
        "failed": dict(status="failed", sending_started_at=old),
        "queued": dict(status="queued"),
    }
    queued = []
    monkeypatch.setattr("celery.canvas._chain.apply_async", lambda self, *a, **k: queued.append(self))
    rows = {}
    for name, fields in states.items():
        row_id = post_outbox(client, connection, subject=name).json()["id"]
        outbox_module._set(client.user.pk, row_id, **fields)
        rows[row_id] = name
    queued.clear()
    assert outbox_reconcile_due() == {"reconcile_queued": 3}
    assert sorted(rows[chain.tasks[-1].kwargs["outbox_id"]] for chain in queued) == [
        "looked_at_long_ago", "stuck_sending", "stuck_uncertain"]


@pytest.mark.django_db(transaction=True, databases=["default", "vault", "maintenance"])
@pytest.mark.parametrize("filed", [True, False], ids=["in-sent", "not-in-sent"])
def test_a_real_worker_killed_mid_send_is_reconciled_by_beat_without_redelivery(sender, smtp_server, dovecot,
                                                                                 test_ca, tmp_path, settings, filed):
    """SIGKILL to worker-sync once the server has the message; the broker never hands the task back
    (its unacked copy is dropped); beat's job queues the look; fresh workers settle the row."""
    from datetime import timedelta

    import redis
    from django.conf import settings as live_settings
    from django.utils import timezone

    from mail.tasks import outbox_reconcile_due
    from tests.harness.processes import Worker, wait_for

    client, connection, ids = sender
    extra = {"AIEMAILY_MAIL_CA_BUNDLE": str(test_ca.ca_file), "AIEMAILY_ALLOWED_PRIVATE_HOSTS": "127.0.0.1,localhost",
             "AIEMAILY_OBJECTS_DIR": str(settings.AIEMAILY_OBJECTS_DIR), "AIEMAILY_SEND_STALE_SECONDS": "3"}
    settings.AIEMAILY_SEND_STALE_SECONDS = 3
    vault = Worker("vault", "vault", tmp_path / "vault.log", extra)
    killed = Worker("sync", "sync", tmp_path / "sync.log", extra)
    workers = [vault, killed]
    try:
        vault.wait_ready()
        killed.wait_ready()
        smtp_server.filing = _filer(dovecot, test_ca, connection.imap_username) if filed else None
        smtp_server.on_data = lambda: os.kill(killed.process.pid, signal.SIGKILL)
        body = post_outbox(client, connection).json()  # on commit: leases (worker-vault) → send (worker-sync)
        wait_for(lambda: killed.process.poll() is not None, timeout=90, what="the worker to be killed mid-send")
        smtp_server.on_data = None
        smtp_server.behave(None)
        assert killed.process.returncode == -signal.SIGKILL
        assert outbox_row(client, body["id"]).status == "sending"
        # No redelivery: drop the broker's unacked copy of the killed task (kombu's Redis bookkeeping).
        broker = redis.Redis.from_url(live_settings.CELERY_BROKER_URL)
        unacked = [entry.decode() for entry in broker.hvals("unacked")]
        # The killed worker's task is there, waiting for kombu to hand it back (visibility timeout).
        assert any(body["id"] in entry and "mail.tasks.outbox_send" in entry for entry in unacked)
        broker.delete("unacked", "unacked_index")
        sync = Worker("sync", "sync", tmp_path / "sync2.log", extra)
        workers.append(sync)
        # beat's job reads across owners, so it runs in worker-maintenance (the BYPASSRLS role's zone).
        maintenance = Worker("maintenance", "maintenance", tmp_path / "maintenance.log",
                             {"AIEMAILY_SEND_STALE_SECONDS": "3"})
        workers.append(maintenance)
        sync.wait_ready()
        maintenance.wait_ready()
        began = outbox_row(client, body["id"]).sending_started_at
        wait_for(lambda: timezone.now() - began > timedelta(seconds=3.5), timeout=10, what="the stale period")
        assert outbox_reconcile_due.delay() is not None  # beat's tick, through the broker to worker-maintenance
        final = "sent" if filed else "failed"
        try:
            wait_for(lambda: outbox_row(client, body["id"]).status == final, timeout=90,
                     what=f"beat's reconciliation to settle the row as {final}")
        except AssertionError:
            row = outbox_row(client, body["id"])
            raise AssertionError(f"row is {row.status}: {row.last_error}") from None
    finally:
        smtp_server.on_data = None
        smtp_server.behave(None)
        for worker in workers:  # every one of them, whatever failed: a stray worker would eat later tests' tasks
            worker.stop()
    assert len(_deliveries(smtp_server, body["message_id"])) == 1
    assert "outbox_send" in sync.output() and "Task mail.tasks.outbox_reconcile_due[" in maintenance.output()
    assert "Task mail.tasks.outbox_reconcile_due[" not in sync.output()
