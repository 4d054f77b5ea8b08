"""New-mail push: the IDLE watcher wakes on new mail and queues a sync; beat polls as the fallback
and restarts watchers that stopped."""

import imaplib
import ssl
import threading
import time

import pytest

from aiemaily.ownership.binding import owner_scope
from mail.models import Connection
from mail.providers.mailservers import imap_client
from mail.sync.idle import wait_for_change
from mail.tasks import idle_watch, sync_due
from secrets_vault.crypto import SecretStr
from secrets_vault.tasks import leases_issue
from tests.harness.mailservers import sample_messages

pytestmark = pytest.mark.django_db(databases=["default", "vault"])


def _append_later(dovecot, user, ca_file, delay=1.0):
    def run():
        time.sleep(delay)
        conn = imaplib.IMAP4_SSL("127.0.0.1", dovecot.imaps_port, ssl_context=ssl.create_default_context(
            cafile=str(ca_file)))
        conn.login(user, dovecot.password)
        conn.append("INBOX", None, None, sample_messages(1, malformed=False)[0])
        conn.logout()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_idle_wakes_up_on_new_mail(mail_settings, dovecot, test_ca):
    user, password = dovecot.add_user()
    dovecot.seed(user, sample_messages(1, malformed=False))
    with imap_client("localhost", dovecot.imaps_port, "tls", user, SecretStr(password)) as client:
        thread = _append_later(dovecot, user, test_ca.ca_file)
        started = time.monotonic()
        assert wait_for_change(client, max_seconds=20, check_seconds=1) is True
        assert time.monotonic() - started < 10
        thread.join()


def test_idle_returns_at_the_session_limit_without_news(mail_settings, dovecot):
    user, password = dovecot.add_user()
    dovecot.seed(user, sample_messages(1, malformed=False))
    with imap_client("localhost", dovecot.imaps_port, "tls", user, SecretStr(password)) as client:
        assert wait_for_change(client, max_seconds=1.5, check_seconds=0.5) is False


def _active_connection(owner, user, password, dovecot, smtp_server):
    from mail import services

    server = {"host": "localhost", "port": dovecot.imaps_port, "security": "tls", "username": user,
              "password": SecretStr(password)}
    with owner_scope(owner):
        connection = services.connection_create_imap(owner=owner, email=user, imap=server,
                                                     smtp=dict(server, port=smtp_server.tls_port))
        Connection.objects.for_owner(owner).filter(pk=connection.pk).update(status="active")
    return connection


def test_the_watch_task_queues_a_sync_and_its_next_session(mail_settings, dovecot, smtp_server, test_ca, user,
                                                          django_capture_on_commit_callbacks, monkeypatch):
    imap_user, password = dovecot.add_user()
    dovecot.seed(imap_user, sample_messages(1, malformed=False))
    connection = _active_connection(user, imap_user, password, dovecot, smtp_server)
    sent = []
    monkeypatch.setattr("celery.canvas._chain.apply_async", lambda self, *a, **k: sent.append(self))
    lease = leases_issue(str(user.pk), str(connection.pk), {"imap_password": str(connection.imap_secret_id)})
    thread = _append_later(dovecot, imap_user, test_ca.ca_file, delay=1.5)
    with django_capture_on_commit_callbacks(execute=True):
        result = idle_watch(lease, owner_id=str(user.pk), connection_id=str(connection.pk), max_seconds=20)
    thread.join()
    assert result["status"] == "changed"
    assert [chain.tasks[-1].name for chain in sent] == ["mail.tasks.connection_sync", "mail.tasks.idle_watch"]
    with owner_scope(user):
        assert Connection.objects.for_owner(user).get(pk=connection.pk).sync_state["idle_until"]


@pytest.mark.django_db(transaction=True, databases=["default", "vault", "maintenance"])
def test_beat_polls_every_active_mailbox_and_restarts_watchers(mail_settings, dovecot, smtp_server, monkeypatch,
                                                               caplog):
    from tests.harness.factories import UserFactory

    owners = [UserFactory(), UserFactory()]
    connections = [_active_connection(owner, *dovecot.add_user(), dovecot, smtp_server) for owner in owners]
    stopped = UserFactory()
    with owner_scope(stopped):
        idle = _active_connection(stopped, *dovecot.add_user(), dovecot, smtp_server)
        Connection.objects.for_owner(stopped).filter(pk=idle.pk).update(status="needs_reauth")
    sent = []
    monkeypatch.setattr("celery.canvas._chain.apply_async", lambda self, *a, **k: sent.append(self))
    result = sync_due()
    assert result == {"sync_queued": 2, "watchers_started": 2}
    queued_for = {chain.tasks[-1].kwargs["connection_id"] for chain in sent}
    assert queued_for == {str(c.pk) for c in connections}
    assert any("beat: periodic mail sync" in r.getMessage() for r in caplog.records)
