"""A task queued for something deleted meanwhile (a mailbox disconnected while its sync waited in
the queue) ends quietly as "gone": no DoesNotExist in worker-vault's log, nothing audited as a
refusal, and the rest of its chain (the sync in worker-sync) never runs."""

import logging

import pytest

from aiemaily.ownership.binding import owner_scope
from mail import services
from mail.models import Connection
from secrets_vault.crypto import SecretStr
from secrets_vault.models import AuditEvent
from secrets_vault.tasks import leases_issue, secret_lease


def _server(port: int) -> dict:
    return {"host": "localhost", "port": port, "security": "tls", "username": "someone",
            "password": SecretStr("a-password-for-the-test")}


def _connection(owner) -> Connection:
    with owner_scope(owner):
        return services.connection_create_imap(owner=owner, email="someone@example.test", imap=_server(993),
                                               smtp=_server(465))


def _disconnect(owner, connection, *, keep_mail: bool) -> None:
    with owner_scope(owner):
        services.connection_disconnect(owner=owner, connection=connection, keep_mail=keep_mail)


@pytest.mark.django_db(databases=["default", "vault"])
@pytest.mark.parametrize("keep_mail", [True, False])
def test_a_lease_for_a_disconnected_mailbox_ends_quietly_as_gone(user, caplog, keep_mail):
    connection = _connection(user)
    ids = {"imap_password": str(connection.imap_secret_id), "smtp_password": str(connection.smtp_secret_id)}
    _disconnect(user, connection, keep_mail=keep_mail)
    caplog.set_level(logging.INFO)
    result = leases_issue(str(user.pk), str(connection.pk), ids)
    assert result["status"] == "gone" and result["connection_id"] == str(connection.pk)
    single = secret_lease(str(user.pk), ids["imap_password"], str(connection.pk), "imap_password")
    assert single["status"] == "gone"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    with owner_scope(user):
        assert not AuditEvent.objects.for_owner(user).filter(action=AuditEvent.Action.REFUSED).exists()


@pytest.mark.django_db(transaction=True, databases=["default", "vault"])
def test_real_workers_drop_a_queued_sync_of_a_deleted_mailbox_without_an_error(user, tmp_path):
    from tests.harness.processes import Worker, wait_for

    connection = _connection(user)  # on commit: leases → verify, queued (no worker runs yet)
    with owner_scope(user):
        services.connection_sync_queue(connection=Connection.objects.for_owner(user).get(pk=connection.pk))
    _disconnect(user, connection, keep_mail=False)  # deleted while both chains wait in the broker

    vault = Worker("vault", "vault", tmp_path / "vault.log")
    sync = Worker("sync", "sync", tmp_path / "sync.log")
    try:
        vault.wait_ready()
        sync.wait_ready()
        wait_for(lambda: vault.output().count("is gone; nothing to do") >= 2, timeout=60,
                 what="both queued chains to end as gone")
        wait_for(lambda: vault.output().count("succeeded") >= 2, timeout=30, what="the vault tasks to finish")
    finally:
        vault.stop()
        sync.stop()
    vault_log, sync_log = vault.output(), sync.output()
    assert "DoesNotExist" not in vault_log and "ERROR" not in vault_log, vault_log[-3000:]
    # The chain stopped in the vault: worker-sync was never handed a verify or a sync.
    assert "mail.tasks.connection_sync" not in sync_log.split("ready.")[-1]
    assert "mail.tasks.connection_verify" not in sync_log.split("ready.")[-1]
    assert "ERROR" not in sync_log, sync_log[-3000:]
