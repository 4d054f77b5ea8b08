"""Writes of the mail app: creating, verifying and disconnecting connections."""

import logging

from celery import chain
from django.db import transaction
from django.utils import timezone

from mail.models import Connection
from secrets_vault.crypto import SecretStr
from secrets_vault.services import secret_forget, secret_submit

logger = logging.getLogger(__name__)


def _queue_verification(connection: Connection) -> None:
    from mail.tasks import connection_verify
    from secrets_vault.tasks import leases_issue

    secret_ids = {"imap_password": str(connection.imap_secret_id), "smtp_password": str(connection.smtp_secret_id)}
    owner_id, connection_id = str(connection.owner_id), str(connection.id)
    transaction.on_commit(lambda: chain(
        leases_issue.s(owner_id, connection_id, secret_ids),
        connection_verify.s(owner_id=owner_id, connection_id=connection_id),
    ).apply_async())


def connection_create_imap(*, owner, email: str, imap: dict, smtp: dict) -> Connection:
    """Record an IMAP/SMTP connection; the passwords are sealed at once; a worker tests the login."""
    connection = Connection(
        owner=owner, provider=Connection.Provider.IMAP, email=email, status=Connection.Status.PENDING,
        imap_host=imap["host"], imap_port=imap["port"], imap_security=imap["security"],
        imap_username=imap["username"],
        smtp_host=smtp["host"], smtp_port=smtp["port"], smtp_security=smtp["security"],
        smtp_username=smtp["username"],
    )
    connection.imap_secret = secret_submit(owner=owner, purpose="imap_password", value=imap["password"],
                                           enqueue=False)
    connection.smtp_secret = secret_submit(owner=owner, purpose="smtp_password", value=smtp["password"],
                                           enqueue=False)
    connection.save()
    _queue_verification(connection)
    return connection


def connection_record_verification(*, owner_id, connection_id, error_code: str = "", error: str = "") -> None:
    """Sync side: store the outcome of a login test (a message fit for the user, never a secret)."""
    connection = Connection.objects.for_owner(owner_id).select_for_update().filter(pk=connection_id).first()
    if connection is None or connection.status == Connection.Status.DISCONNECTED:
        return
    now = timezone.now()
    if error_code:
        connection.status = (Connection.Status.NEEDS_REAUTH if error_code == "auth_failed"
                             else Connection.Status.ERROR)
        connection.last_error = error[:300]
    else:
        connection.status, connection.last_error, connection.verified_at = Connection.Status.ACTIVE, "", now
    connection.updated_at = now
    connection.save(update_fields=["status", "last_error", "verified_at", "updated_at"])


def connection_update_password(*, owner, connection: Connection, imap_password: SecretStr | None,
                               smtp_password: SecretStr | None) -> Connection:
    """Re-authorise an IMAP connection with new passwords (old secrets are deleted)."""
    for field, purpose, value in (("imap_secret", "imap_password", imap_password),
                                  ("smtp_secret", "smtp_password", smtp_password)):
        if value is None:
            continue
        old = getattr(connection, field)
        setattr(connection, field, secret_submit(owner=owner, purpose=purpose, value=value, enqueue=False))
        connection.save(update_fields=[field])
        if old is not None:
            secret_forget(owner=owner, secret=old)
    connection.status, connection.last_error = Connection.Status.PENDING, ""
    connection.save(update_fields=["status", "last_error"])
    _queue_verification(connection)
    return connection


def connection_disconnect(*, owner, connection: Connection, keep_mail: bool) -> None:
    """Stop using the connection: credentials shredded (rows deleted), provider access revoked.

    For OAuth connections the vault revokes the refresh token at the provider before deleting it.
    Synced mail is kept or deleted as the user chose.
    """
    secrets = [s for s in (connection.imap_secret, connection.smtp_secret) if s is not None]
    oauth_secret = connection.oauth_secret
    connection.status = Connection.Status.DISCONNECTED
    connection.imap_secret = connection.smtp_secret = None
    connection.updated_at = timezone.now()
    connection.save(update_fields=["status", "imap_secret", "smtp_secret", "updated_at"])
    for secret in secrets:
        secret_forget(owner=owner, secret=secret)
    if oauth_secret is not None:
        from mail.oauth import queue_revocation

        queue_revocation(connection)
    if not keep_mail:
        from mail import blobstore

        Connection.objects.for_owner(owner).filter(pk=connection.pk).delete()  # cascades to messages
        connection_id = str(connection.pk)
        transaction.on_commit(lambda: blobstore.delete_owner(owner.pk, "messages", connection_id))
    logger.info("connection %s disconnected (keep_mail=%s)", connection.pk, keep_mail)


def connection_sync_queue(*, connection: Connection) -> None:
    """Queue a sync: the vault leases the IMAP password, then worker-sync syncs."""
    from mail.tasks import connection_sync
    from secrets_vault.tasks import leases_issue

    if connection.provider != Connection.Provider.IMAP or connection.imap_secret_id is None:
        raise ValueError("only active IMAP connections sync here")
    owner_id, connection_id = str(connection.owner_id), str(connection.id)
    secret_ids = {"imap_password": str(connection.imap_secret_id)}
    transaction.on_commit(lambda: chain(
        leases_issue.s(owner_id, connection_id, secret_ids),
        connection_sync.s(owner_id=owner_id, connection_id=connection_id),
    ).apply_async())


def connection_idle_queue(*, connection: Connection, max_seconds: int | None = None) -> None:
    """Queue an IDLE watch session (a fresh lease first) for an active IMAP connection."""
    from mail.tasks import idle_watch
    from secrets_vault.tasks import leases_issue

    owner_id, connection_id = str(connection.owner_id), str(connection.id)
    secret_ids = {"imap_password": str(connection.imap_secret_id)}
    transaction.on_commit(lambda: chain(
        leases_issue.s(owner_id, connection_id, secret_ids),
        idle_watch.s(owner_id=owner_id, connection_id=connection_id, max_seconds=max_seconds),
    ).apply_async())


def connection_sync_mark_queued(*, connection: Connection) -> None:
    """Show 'queued' at once, so the page polls until the worker reports progress."""
    state = {**(connection.sync_state or {}), "state": "queued", "last_error": ""}
    Connection.objects.for_owner(connection.owner_id).filter(pk=connection.pk).update(sync_state=state)


def _access_lease_step(connection: Connection):
    """Gmail / Microsoft: the vault leases a fresh access token (refresh tokens never leave it)."""
    from mail.providers.oauth_base import ACCESS_PURPOSE
    from secrets_vault.tasks import oauth_access_lease

    if connection.oauth_secret_id is None:
        raise ValueError("this connection is not signed in")
    return oauth_access_lease.s(str(connection.owner_id), str(connection.pk), ACCESS_PURPOSE)


def outbox_queue(*, row, countdown: int = 0) -> None:
    """Queue a send: the vault leases the SMTP and IMAP passwords (or, for Gmail and Microsoft, an
    access token), then worker-sync sends."""
    from mail.tasks import outbox_send
    from secrets_vault.tasks import leases_issue

    connection = row.connection
    owner_id, connection_id, outbox_id = str(row.owner_id), str(connection.pk), str(row.pk)
    if connection.provider != Connection.Provider.IMAP:
        lease = _access_lease_step(connection)
        transaction.on_commit(lambda: chain(
            lease, outbox_send.s(owner_id=owner_id, outbox_id=outbox_id)).apply_async(countdown=countdown))
        return
    secret_ids = {"smtp_password": str(connection.smtp_secret_id), "imap_password": str(connection.imap_secret_id)}
    transaction.on_commit(lambda: chain(
        leases_issue.s(owner_id, connection_id, secret_ids),
        outbox_send.s(owner_id=owner_id, outbox_id=outbox_id),
    ).apply_async(countdown=countdown))


def connection_sync_dispatch(*, connection: Connection) -> None:
    """Queue a sync for any provider. IMAP leases its password (connection_sync_queue); Gmail and
    Microsoft get a fresh access token leased by the vault (refresh tokens never leave it), then
    worker-sync runs gmail_sync / graph_sync with it."""
    from mail.providers.oauth_base import ACCESS_PURPOSE
    from mail.tasks import gmail_sync, graph_sync
    from secrets_vault.tasks import oauth_access_lease

    if connection.provider == Connection.Provider.IMAP:
        connection_sync_queue(connection=connection)
        return
    if connection.status != Connection.Status.ACTIVE or connection.oauth_secret_id is None:
        raise ValueError("only active, signed-in connections sync")
    sync = gmail_sync if connection.provider == Connection.Provider.GMAIL else graph_sync
    owner_id, connection_id = str(connection.owner_id), str(connection.id)
    transaction.on_commit(lambda: chain(
        oauth_access_lease.s(owner_id, connection_id, ACCESS_PURPOSE),
        sync.s(owner_id=owner_id, connection_id=connection_id),
    ).apply_async())


def message_action_queue(*, message, action: str, params: dict, attempt: int = 1, countdown: int = 0) -> None:
    """Queue an action on a message: the vault leases the IMAP password (or an access token for
    Gmail / Microsoft), worker-sync applies it."""
    from mail.tasks import message_action
    from secrets_vault.tasks import leases_issue

    connection = message.connection
    owner_id, connection_id, message_id = str(message.owner_id), str(connection.pk), str(message.pk)
    if connection.provider != Connection.Provider.IMAP:
        lease = _access_lease_step(connection)
        transaction.on_commit(lambda: chain(lease, message_action.s(
            owner_id=owner_id, message_id=message_id, action=action, params=params, attempt=attempt,
        )).apply_async(countdown=countdown))
        return
    secret_ids = {"imap_password": str(connection.imap_secret_id)}
    transaction.on_commit(lambda: chain(
        leases_issue.s(owner_id, connection_id, secret_ids),
        message_action.s(owner_id=owner_id, message_id=message_id, action=action, params=params, attempt=attempt),
    ).apply_async(countdown=countdown))
