"""Writes of the mail app: creating, verifying and disconnecting connections; opening a message for
display (which writes its audit event)."""

import email.utils
import logging
import uuid
from email.message import EmailMessage
from email.policy import SMTP

from celery import chain
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db import connection as db_connection
from django.utils import timezone
from rest_framework import serializers

from aiemaily.ownership.binding import owner_scope
from aiemaily.webhooks.models import Provider
from aiemaily.webhooks.selectors import subscription_for_connection
from aiemaily.webhooks.services import subscription_retire
from billing import services as billing_services
from mail import blobstore
from mail.models import Connection, Delegation, Message, OutboxMessage
from mail.queue import (
    connection_sync,
    connection_verify,
    gmail_sync,
    graph_sync,
    idle_watch,
    message_action,
    outbox_send,
    push_close,
    push_open,
)
from mail.selectors import connection_list, push_provider
from secrets_vault.crypto import SecretStr
from secrets_vault.models import AuditEvent
from secrets_vault.oauth.base import ACCESS_PURPOSE
from secrets_vault.queue import leases_issue, oauth_access_lease, oauth_close_lease, oauth_revoke
from secrets_vault.services import audit_record, secret_forget, secret_submit

logger = logging.getLogger(__name__)


def _queue_verification(connection: Connection) -> None:
    secret_ids = {"imap_password": str(connection.imap_secret_id), "smtp_password": str(connection.smtp_secret_id)}
    owner_id, connection_id = str(connection.owner_id), str(connection.id)
    transaction.on_commit(lambda: chain(
        leases_issue.s(owner_id, connection_id, secret_ids),
        connection_verify.s(owner_id=owner_id, connection_id=connection_id),
    ).apply_async())


def mailbox_slot_check(*, owner) -> None:
    """Billing's plan limit on mailboxes, before one more is recorded (billing.services.PlanLimitReached:
    403 `plan_limit` in the API, a message with the upgrade link in the UI). A disconnected mailbox
    no longer counts. Call inside the transaction that creates the connection."""
    billing_services.mailbox_slot_check(
        owner=owner,
        in_use=lambda: connection_list(owner=owner).count())


@transaction.atomic
def connection_create_imap(*, owner, email: str, imap: dict, smtp: dict) -> Connection:
    """Record an IMAP/SMTP connection; the passwords are sealed at once; a worker tests the login."""
    mailbox_slot_check(owner=owner)
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
        became_active = connection.status != Connection.Status.ACTIVE
        connection.status, connection.last_error, connection.verified_at = Connection.Status.ACTIVE, "", now
    connection.updated_at = now
    connection.save(update_fields=["status", "last_error", "verified_at", "updated_at"])
    if not error_code and became_active and connection.provider == Connection.Provider.IMAP:
        # A mailbox that just became usable syncs now and gets its watcher now, not when beat's
        # next round (AIEMAILY_SYNC_INTERVAL) notices it.
        connection_sync_mark_queued(connection=connection)
        connection_sync_queue(connection=connection)
        connection_idle_queue(connection=connection)


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
    # Push deliveries for this mailbox are dropped (as stale) from the commit on; the channel is
    # stopped at the provider just before the grant is revoked.
    channel = next((row for row in (subscription_for_connection(provider=p, connection_id=connection.pk)
                                    for p in (Provider.GMAIL, Provider.GRAPH)) if row is not None), None)
    for provider in (Provider.GMAIL, Provider.GRAPH):
        subscription_retire(provider=provider, connection_id=connection.pk)
    if oauth_secret is not None and channel is not None:
        _queue_close_then_revoke(connection, channel)
    elif oauth_secret is not None:
        _queue_revocation(connection)
    if not keep_mail:
        Connection.objects.for_owner(owner).filter(pk=connection.pk).delete()  # cascades to messages
        connection_id = str(connection.pk)
        transaction.on_commit(lambda: blobstore.delete_owner(owner.pk, "messages", connection_id))
    logger.info("connection %s disconnected (keep_mail=%s)", connection.pk, keep_mail)


def _queue_close_then_revoke(connection: Connection, channel) -> None:
    """Disconnect with a push channel: the vault leases one last access token, worker-sync stops the
    channel (users.stop / DELETE subscription), then the vault revokes and destroys the grant. Each
    step ends without raising, so the revocation runs whatever happened before it."""
    owner_id, connection_id = str(connection.owner_id), str(connection.pk)
    provider, secret_id = connection.provider, str(connection.oauth_secret_id)
    args = (channel.provider, channel.external_id)
    scopes = list(connection.granted_scopes or [])
    transaction.on_commit(lambda: chain(
        oauth_close_lease.si(owner_id, connection_id, provider, secret_id, scopes),
        push_close.s(owner_id, connection_id, *args),
        oauth_revoke.si(owner_id, connection_id, provider, secret_id),
    ).apply_async())


def connection_sync_queue(*, connection: Connection) -> None:
    """Queue a sync: the vault leases the IMAP password, then worker-sync syncs."""
    if connection.provider != Connection.Provider.IMAP or connection.imap_secret_id is None:
        raise ValueError("only active IMAP connections sync here")
    owner_id, connection_id = str(connection.owner_id), str(connection.id)
    secret_ids = {"imap_password": str(connection.imap_secret_id)}
    transaction.on_commit(lambda: chain(
        leases_issue.s(owner_id, connection_id, secret_ids),
        connection_sync.s(owner_id=owner_id, connection_id=connection_id),
    ).apply_async())


def connection_idle_queue(*, connection: Connection, max_seconds: int | None = None, countdown: int = 0) -> None:
    """Queue an IDLE watch session (a fresh lease first) for an active IMAP connection."""
    owner_id, connection_id = str(connection.owner_id), str(connection.id)
    secret_ids = {"imap_password": str(connection.imap_secret_id)}
    transaction.on_commit(lambda: chain(
        leases_issue.s(owner_id, connection_id, secret_ids),
        idle_watch.s(owner_id=owner_id, connection_id=connection_id, max_seconds=max_seconds),
    ).apply_async(countdown=countdown))


def connection_sync_mark_queued(*, connection: Connection) -> None:
    """Show 'queued' at once, so the page polls until the worker reports progress."""
    state = {**(connection.sync_state or {}), "state": "queued", "last_error": ""}
    Connection.objects.for_owner(connection.owner_id).filter(pk=connection.pk).update(sync_state=state)


def _access_lease_step(connection: Connection):
    """Gmail / Microsoft: the vault leases a fresh access token (refresh tokens never leave it)."""
    if connection.oauth_secret_id is None:
        raise ValueError("this connection is not signed in")
    return oauth_access_lease.s(str(connection.owner_id), str(connection.pk), ACCESS_PURPOSE)


def outbox_queue(*, row, countdown: int = 0) -> None:
    """Queue a send: the vault leases the SMTP and IMAP passwords (or, for Gmail and Microsoft, an
    access token), then worker-sync sends."""
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


def connection_push_open_queue(*, connection: Connection) -> None:
    """Open or renew the mailbox's push channel: the vault leases an access token, worker-sync calls
    users.watch / Graph subscriptions (mail/sync/push.py). Nothing when push is not configured for it."""
    if push_provider(connection) is None or connection.oauth_secret_id is None:
        return
    owner_id, connection_id = str(connection.owner_id), str(connection.id)
    lease = _access_lease_step(connection)
    transaction.on_commit(lambda: chain(lease, push_open.s(owner_id=owner_id, connection_id=connection_id))
                          .apply_async())


def message_action_queue(*, message, action: str, params: dict, attempt: int = 1, countdown: int = 0) -> None:
    """Queue an action on a message: the vault leases the IMAP password (or an access token for
    Gmail / Microsoft), worker-sync applies it."""
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


def message_body_open(*, reader, message: Message, view: str) -> bytes:
    """Decrypt a message's stored copy for display and record it in the owner's audit trail: one
    event per view of a message (page, API call), not per part or byte.

    A delegate (`reader` is not the owner) gets the body only for a thread a live grant hands them
    (mail/blobstore.py checks it), and the owner's trail says who read it.
    """
    delegate = reader if reader.pk != message.owner_id else None
    raw = blobstore.get(message.owner_id, message.blob_key, delegate=delegate)
    detail = (f"opened for display ({view})" if delegate is None
              else f"opened for display by {reader.email}, a delegate of this thread ({view})")
    with owner_scope(message.owner_id):  # the owner's trail, also when a delegate reads
        audit_record(owner_id=message.owner_id, action=AuditEvent.Action.READ, process="web",
                     purpose="message_body", subject=message.pk, detail=detail)
    return raw


# --- delegating a thread ------------------------------------------------------------------------------

def delegation_grant(*, owner, message: Message, email: str, permission: str) -> Delegation:
    # Only a verified address finds an account (accounts/verification.py): someone who signed up with
    # another person's address can never receive the threads meant for that person.
    delegate = (get_user_model().objects
                .filter(email__iexact=email, is_active=True, email_verified_at__isnull=False).first())
    if delegate is None or delegate.pk == owner.pk:
        # One message for both cases, so the form does not confirm who has an account beyond
        # what the owner typed.
        raise serializers.ValidationError({"email": "Enter the exact, confirmed address of another Aiemaily user."})
    # Our own id when the message names no thread: a sender cannot write it into another message.
    thread_id = message.thread_id or str(message.pk)
    if not message.thread_id:
        Message.objects.for_owner(owner).filter(pk=message.pk).update(thread_id=thread_id)
    existing = Delegation.objects.for_owner(owner).filter(
        delegate=delegate, connection_id=message.connection_id, thread_id=thread_id, revoked_at__isnull=True).first()
    if existing:
        if existing.permission != permission:
            existing.permission = permission
            existing.save(update_fields=["permission"])
        return existing
    return Delegation.objects.create(owner=owner, delegate=delegate, connection_id=message.connection_id,
                                     thread_id=thread_id, permission=permission)


def delegation_revoke(*, owner, delegation: Delegation) -> None:
    Delegation.objects.for_owner(owner).filter(pk=delegation.pk, revoked_at__isnull=True).update(
        revoked_at=timezone.now())


def _queue_revocation(connection: Connection) -> None:
    """Have worker-vault revoke the refresh token at the provider and destroy it (after the commit).

    The task carries the secret's id and the provider, not just the connection: the user may have
    chosen to delete the connection row together with its mail.
    """
    if connection.oauth_secret_id is None:
        return
    args = [str(connection.owner_id), str(connection.pk), connection.provider, str(connection.oauth_secret_id)]
    transaction.on_commit(lambda: oauth_revoke.delay(*args))


# --- the outbox: what web asks worker-sync to send (mail/send/outbox.py sends it) -------------------

def build_message(*, connection: Connection, to, cc, subject, body_text, in_reply_to="") -> EmailMessage:
    message = EmailMessage(policy=SMTP)
    message["From"] = connection.email
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = subject
    message["Date"] = email.utils.formatdate(localtime=False)
    domain = connection.email.rsplit("@", 1)[-1] or "aiemaily.invalid"
    message["Message-ID"] = email.utils.make_msgid(domain=domain)
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    message.set_content(body_text)
    return message


def outbox_create(*, owner, connection: Connection, to, cc, subject, body_text, in_reply_to="",
                  form_key: uuid.UUID | None = None) -> OutboxMessage:
    """Record a message and queue its send. Raises IntegrityError for a form key already used."""
    message = build_message(connection=connection, to=to, cc=cc, subject=subject, body_text=body_text,
                            in_reply_to=in_reply_to)
    row = OutboxMessage(owner=owner, connection=connection, message_id=message["Message-ID"], to_addrs=list(to),
                        cc_addrs=list(cc), subject=subject, in_reply_to=in_reply_to, form_key=form_key)
    row.blob_key = blobstore.put(owner.pk, ("outbox", str(row.id)), message.as_bytes())
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError:
        blobstore.delete(owner.pk, row.blob_key)
        raise
    outbox_queue(row=row)
    return row


def outbox_submit_form(*, owner, form_key: uuid.UUID, **fields) -> tuple[OutboxMessage, bool]:
    """The compose page's send: (row, created). The form carries a one-time key, so a double-click
    or a browser resubmit of the same form finds the first row instead of making a second."""
    _lock_form_key(owner.pk, form_key)
    existing = OutboxMessage.objects.for_owner(owner).filter(form_key=form_key).first()
    if existing is not None:
        return existing, False
    try:
        return outbox_create(owner=owner, form_key=form_key, **fields), True
    except IntegrityError:
        # unique (owner, form_key) has the last word where the lock is not available (SQLite).
        return OutboxMessage.objects.for_owner(owner).get(form_key=form_key), False


def _lock_form_key(owner_id, form_key: uuid.UUID) -> None:
    """Serialise submissions of one form: the second waits for the first's transaction to end, then
    finds its row. The lock ends with the transaction, however it ends."""
    if db_connection.vendor != "postgresql":
        return  # SQLite: one writer at a time anyway, and the unique constraint decides
    lock_id = int.from_bytes(uuid.uuid5(form_key, str(owner_id)).bytes[:8], "big", signed=True)
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [lock_id])
