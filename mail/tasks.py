"""Tasks of the `sync` queue. Credentials arrive only as leases sealed to this pool."""

import logging
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta

from celery import shared_task
from django.conf import settings
from django.db import connection as db_connection
from django.db.models import Q
from django.utils import timezone

from aiemaily.ops.outage import is_transient_outage
from aiemaily.ownership.binding import owner_scope
from aiemaily.webhooks.models import Provider, Verdict, WebhookDelivery, WebhookSubscription
from aiemaily.webhooks.services import delivery_claim, subscription_purge_retired
from mail import services
from mail.models import Connection, Folder, Message, OutboxMessage
from mail.providers.mailservers import MailServerError, imap_client, verify_imap, verify_smtp
from mail.send import actions, outbox
from mail.sync import gmail, graph, push
from mail.sync import parts as sync_parts
from mail.sync.idle import IDLE_SECONDS, ConnectionDropped, wait_for_change
from mail.sync.imap import Progress, _save_progress, sync_connection, sync_parts_while_any
from mail.sync.rest import AuthFailed, ProviderError, TokenExpired
from secrets_vault.oauth.base import ACCESS_PURPOSE
from secrets_vault.sealing import LeaseError, lease_open

logger = logging.getLogger(__name__)


def _verify(connection: Connection, leases: dict) -> tuple[str, str]:
    checks = (("imap_password", verify_imap, "imap"), ("smtp_password", verify_smtp, "smtp"))
    for purpose, verify, prefix in checks:
        password = lease_open(leases[purpose], owner_id=connection.owner_id, connection_id=connection.id,
                              purpose=purpose)
        try:
            verify(getattr(connection, f"{prefix}_host"), getattr(connection, f"{prefix}_port"),
                   getattr(connection, f"{prefix}_security"), getattr(connection, f"{prefix}_username"), password)
        except MailServerError as exc:
            return exc.code, exc.message
        finally:
            del password
    return "", ""


@shared_task(name="mail.tasks.connection_verify")
def connection_verify(leases, owner_id, connection_id):
    """Log in to IMAP and SMTP with leased passwords; record active or a clear error.

    The network I/O happens outside any database transaction; reads and the final write each run
    in their own transaction bound to the owner.
    """
    with owner_scope(owner_id):
        connection = Connection.objects.for_owner(owner_id).filter(pk=connection_id).first()
    if connection is None:
        return {"connection_id": connection_id, "status": "gone"}
    try:
        code, message = _verify(connection, leases)
    except LeaseError:
        code, message = "lease", "The credentials could not be handed to the mail worker; try again."
        logger.warning("lease for connection %s did not open", connection_id)
    with owner_scope(owner_id):
        services.connection_record_verification(owner_id=owner_id, connection_id=connection_id,
                                                error_code=code, error=message)
    return {"connection_id": connection_id, "status": "error" if code else "active", "code": code}


# A sync cut short by a dependency outage (PostgreSQL or PgBouncer restarting, the storage KMS or the
# object store unreachable) tries again by itself, after 2, 4, 8, 16, then every 30 seconds: ten tries
# over about three and a half minutes, inside the lease's lifetime (AIEMAILY_LEASE_SECONDS, 300 s).
# A longer outage leaves it to beat's next sync_due, which asks the vault for a fresh lease.
SYNC_OUTAGE_RETRIES = 10


def sync_outage_countdown(retries: int) -> int:
    return min(30, 2 ** (retries + 1))


@contextmanager
def _imap_session(leases, owner_id, connection: Connection):
    """An IMAP session of `connection`, logged in with its leased password (LeaseError and
    MailServerError go to the caller); the password is not kept once the server has it."""
    password = lease_open(leases["imap_password"], owner_id=owner_id, connection_id=connection.pk,
                          purpose="imap_password")
    with imap_client(connection.imap_host, connection.imap_port, connection.imap_security,
                     connection.imap_username, password) as client:
        del password
        yield client


def _retry_outage(task, exc: Exception, connection_id):
    """A sync stopped by a dependency outage runs again later (the caller re-raises anything else)."""
    logger.warning("sync of connection %s stopped by an outage (%s); retrying", connection_id, type(exc).__name__)
    if not db_connection.in_atomic_block:
        db_connection.close()  # a connection an outage broke may still look usable: never reuse it
    return task.retry(exc=exc, countdown=sync_outage_countdown(task.request.retries))


@shared_task(name="mail.tasks.connection_sync", acks_late=True, bind=True, max_retries=SYNC_OUTAGE_RETRIES)
def connection_sync(self, leases, owner_id, connection_id):
    """Sync an IMAP connection with a leased password. Safe to run again at any point, so an outage
    retries the whole task: what was stored stays, the rest is fetched (rows are unique per UID)."""
    try:
        return _connection_sync(leases, owner_id, connection_id)
    except Exception as exc:
        if not is_transient_outage(exc):
            raise
        raise _retry_outage(self, exc, connection_id) from None


@shared_task(name="mail.tasks.connection_sync_part", acks_late=True, bind=True, max_retries=SYNC_OUTAGE_RETRIES)
def connection_sync_part(self, leases, owner_id, connection_id, folder_id, plan_id, index):
    """Store one part of a large folder sync that another sync task cut into parts (mail/sync/parts.py),
    with the lease that task was given. A part claimed already, done, or of a plan since replaced is
    left alone; a part this task cannot sync is given back, and the coordinating task syncs it."""
    try:
        return _connection_sync_part(leases, owner_id, connection_id, folder_id, plan_id, index,
                                     holder=self.request.id or "")
    except Exception as exc:
        if not is_transient_outage(exc):
            raise
        raise _retry_outage(self, exc, connection_id) from None


def _connection_sync_part(leases, owner_id, connection_id, folder_id, plan_id, index, *, holder: str):
    with owner_scope(owner_id):
        connection = Connection.objects.for_owner(owner_id).filter(pk=connection_id).first()
        folder = Folder.objects.for_owner(owner_id).filter(pk=folder_id, connection_id=connection_id).first()
    if connection is None or folder is None or connection.status == Connection.Status.DISCONNECTED:
        return {"connection_id": connection_id, "status": "gone"}
    claimed = sync_parts.part_claim(owner_id, folder_id, plan_id, index, holder=holder)
    if claimed is None:
        return {"connection_id": connection_id, "status": "taken"}
    plan = sync_parts.plan_read(owner_id, folder_id, plan_id) or {}
    try:
        with _imap_session(leases, owner_id, connection) as client:
            uidvalidity = client.select_folder(folder.name, readonly=True).get(b"UIDVALIDITY")
            if uidvalidity is None or int(uidvalidity) != plan.get("uidvalidity"):
                # Renumbered since the plan: its coordinator's next sync starts the folder again.
                sync_parts.part_release(owner_id, folder_id, plan_id, index, holder=holder)
                return {"connection_id": connection_id, "status": "renumbered"}
            synced = sync_parts_while_any(client, owner_id, connection, folder, int(uidvalidity), plan_id, claimed,
                                          holder=holder)
    except (MailServerError, LeaseError) as exc:
        logger.warning("part %s of a sync of connection %s given back: %s", index, connection_id, type(exc).__name__)
        sync_parts.part_release(owner_id, folder_id, plan_id, index, holder=holder)
        return {"connection_id": connection_id, "status": "released"}
    logger.info("stored %d parts of a sync of connection %s", synced, connection_id)
    return {"connection_id": connection_id, "status": "synced", "parts": synced}


def _connection_sync(leases, owner_id, connection_id):
    with owner_scope(owner_id):
        connection = Connection.objects.for_owner(owner_id).filter(pk=connection_id).first()
    if connection is None or connection.status == Connection.Status.DISCONNECTED:
        return {"connection_id": connection_id, "status": "gone"}
    try:
        with _imap_session(leases, owner_id, connection) as client:
            progress = sync_connection(client, owner_id, connection, queue_part=_part_queuer(leases, owner_id,
                                                                                           connection_id))
    except (MailServerError, LeaseError) as exc:
        message = exc.message if isinstance(exc, MailServerError) else "The mail worker could not use the credentials."
        _save_progress(owner_id, connection_id, Progress().as_state("error", message))
        if isinstance(exc, MailServerError) and exc.code == "auth_failed":
            with owner_scope(owner_id):
                services.connection_record_verification(owner_id=owner_id, connection_id=connection_id,
                                                        error_code=exc.code, error=exc.message)
        return {"connection_id": connection_id, "status": "error"}
    return {"connection_id": connection_id, "status": "synced", "messages": progress.done}


def _part_queuer(leases, owner_id, connection_id):
    """How a sync hands a part of a large folder to the sync pool: a task with the same lease (only the
    IMAP password's; the sync queue's processes hold the key that opens it)."""
    imap_only = {"imap_password": leases["imap_password"]}

    def queue_part(folder_id, plan_id, index):
        connection_sync_part.apply_async((imap_only, str(owner_id), str(connection_id), str(folder_id), plan_id,
                                          index))
    return queue_part


def _watching(owner_id, connection_id, secret_id) -> bool:
    """Is this watcher still wanted: the mailbox exists, is active, and has the same password?"""
    with _database_turn(), owner_scope(owner_id):
        return Connection.objects.for_owner(owner_id).filter(
            pk=connection_id, status=Connection.Status.ACTIVE, imap_secret_id=secret_id).exists()


# How many of the idle process's watchers use the database at once (each through its own thread's
# connection, closed when its turn ends). One process holds hundreds of watchers; without a bound a
# Dovecot restart wakes them all at the same moment and they open hundreds of connections, beyond
# what PostgreSQL or PgBouncer accept; a busy machine that slows each connect does the same.
IDLE_DATABASE_TURNS = 8
_turns = threading.BoundedSemaphore(IDLE_DATABASE_TURNS)


@contextmanager
def _database_turn():
    """A watcher's database work: wait for one of the few turns, then hand the connection back.

    Kept open between turns, every watched mailbox would hold a PostgreSQL (or PgBouncer client)
    connection for minutes: 500 watchers, 500 connections. Never inside a caller's transaction
    (tests run the task inline there): then the connection is the caller's and stays open."""
    with _turns:
        try:
            yield
        finally:
            if not db_connection.in_atomic_block:
                db_connection.close()


def _reconnected(owner_id, connection_id) -> None:
    """After a dropped session the watcher is back: catch up on what arrived meanwhile."""
    with owner_scope(owner_id):
        connection = Connection.objects.for_owner(owner_id).filter(pk=connection_id).first()
        if connection is None or not (connection.sync_state or {}).get("idle_failures"):
            return
        state = {**connection.sync_state, "idle_failures": 0}
        Connection.objects.for_owner(owner_id).filter(pk=connection_id).update(sync_state=state)
        if connection.status == Connection.Status.ACTIVE and connection.imap_secret_id is not None:
            services.connection_sync_queue(connection=connection)


@shared_task(name="mail.tasks.idle_watch")
def idle_watch(leases, owner_id, connection_id, max_seconds=None):
    """The IDLE watcher (queue `idle`, its own process): wait for new mail, then queue a sync.

    One task per active mailbox holds one IMAP connection. When the session ends (new mail or the
    25-minute IDLE limit) the next one is queued with a fresh lease; `sync_due` restarts watchers
    that died, using the `idle_until` mark this task keeps in the connection's sync state.
    A dropped connection or an unreachable server ends the session and the next one starts after
    a growing pause (AIEMAILY_IDLE_BACKOFF_SECONDS, doubling up to AIEMAILY_IDLE_BACKOFF_MAX_SECONDS);
    a disconnected or deleted mailbox ends its watcher within AIEMAILY_IDLE_CHECK_SECONDS.
    """
    seconds = max_seconds or IDLE_SECONDS
    with _database_turn():
        with owner_scope(owner_id):
            connection = Connection.objects.for_owner(owner_id).filter(pk=connection_id).first()
        if connection is None or connection.status != Connection.Status.ACTIVE or connection.imap_secret_id is None:
            return {"connection_id": connection_id, "status": "stopped"}
        secret_id = connection.imap_secret_id
        until = timezone.now() + timezone.timedelta(seconds=seconds + 120)
        _save_progress(owner_id, connection_id, {"idle_until": until.isoformat()})
    dropped = ""
    try:
        with _imap_session(leases, owner_id, connection) as client:
            with _database_turn():
                _reconnected(owner_id, connection_id)
            changed = wait_for_change(client, max_seconds=seconds, check_seconds=settings.AIEMAILY_IDLE_CHECK_SECONDS,
                                      keep_going=lambda: _watching(owner_id, connection_id, secret_id))
    except ConnectionDropped as exc:
        changed, dropped = False, f"dropped ({exc})"
    except MailServerError as exc:
        if exc.code in ("auth_failed", "tls_failed"):  # waiting will not fix these; beat retries later
            with _database_turn():
                _save_progress(owner_id, connection_id, {"idle_until": None})
            return {"connection_id": connection_id, "status": "error", "code": exc.code}
        changed, dropped = False, exc.code
    except LeaseError:
        with _database_turn():
            _save_progress(owner_id, connection_id, {"idle_until": None})
        return {"connection_id": connection_id, "status": "error", "code": "lease"}
    with _database_turn(), owner_scope(owner_id):
        connection = Connection.objects.for_owner(owner_id).filter(pk=connection_id).first()
        if connection is None:
            return {"connection_id": connection_id, "status": "stopped"}
        if connection.status != Connection.Status.ACTIVE or connection.imap_secret_id != secret_id:
            # Disconnected, or a new password whose verification starts its own watcher.
            _save_progress(owner_id, connection_id, {"idle_until": None})
            return {"connection_id": connection_id, "status": "stopped"}
        if dropped:
            failures = int((connection.sync_state or {}).get("idle_failures") or 0) + 1
            pause = min(settings.AIEMAILY_IDLE_BACKOFF_SECONDS * 2 ** (failures - 1),
                        settings.AIEMAILY_IDLE_BACKOFF_MAX_SECONDS)
            until = timezone.now() + timezone.timedelta(seconds=pause + seconds + 120)
            _save_progress(owner_id, connection_id, {"idle_failures": failures, "idle_until": until.isoformat()})
            logger.info("IDLE session of connection %s ended (%s); reconnecting in %s s", connection_id, dropped,
                        pause)
            services.connection_idle_queue(connection=connection, countdown=pause)
            return {"connection_id": connection_id, "status": "reconnecting", "after": pause}
        if changed:
            services.connection_sync_queue(connection=connection)
        services.connection_idle_queue(connection=connection)
    return {"connection_id": connection_id, "status": "changed" if changed else "renew"}


@shared_task(name="mail.tasks.sync_due")
def sync_due():
    """Beat: poll every active IMAP mailbox (the fallback) and restart IDLE watchers that stopped.

    Reads across owners through the audited maintenance path; queues per-owner work only.
    """
    queued = watchers = 0
    active = Connection.objects.unscoped(reason="beat: periodic mail sync").filter(status=Connection.Status.ACTIVE)
    for connection in active:
        with owner_scope(connection.owner_id):
            if connection.provider != Connection.Provider.IMAP:
                if connection.oauth_secret_id is not None:
                    services.connection_sync_dispatch(connection=connection)
                    queued += 1
                continue
            services.connection_sync_queue(connection=connection)
            queued += 1
            idle_until = (connection.sync_state or {}).get("idle_until")
            if not idle_until or datetime.fromisoformat(idle_until) < timezone.now():
                services.connection_idle_queue(connection=connection)
                watchers += 1
    return {"sync_queued": queued, "watchers_started": watchers}


@shared_task(name="mail.tasks.outbox_send", acks_late=True)
def outbox_send(leases, owner_id, outbox_id):
    """Send one outbox message exactly once (see mail/send/outbox.py for the state machine).

    IMAP connections get {purpose: lease} for the SMTP/IMAP passwords; Gmail and Microsoft get the
    access-token lease of secrets_vault.tasks.oauth_access_lease."""
    with owner_scope(owner_id):
        row = OutboxMessage.objects.for_owner(owner_id).select_related("connection").filter(pk=outbox_id).first()
    if row is None:
        return {"outbox_id": outbox_id, "status": "gone"}
    if row.connection.provider == Connection.Provider.IMAP:
        result = outbox.send(outbox.LeasedPasswords(leases, owner_id, row.connection_id), owner_id, outbox_id)
    else:
        result = _oauth_send(leases, owner_id, row)
    if (result == "retry" and row.attempts < 5) or result == "checking":
        # retry: nothing reached the provider, send later. checking: the answer was lost; look in
        # Sent once the provider has filed it (the row is uncertain, so this run only reconciles).
        with owner_scope(owner_id):
            row = OutboxMessage.objects.for_owner(owner_id).select_related("connection").get(pk=outbox_id)
            services.outbox_queue(row=row, countdown=60 * (row.attempts or 1))
    elif result == "retry":
        outbox.outbox_fail(owner_id=owner_id, outbox_id=outbox_id,
                           last_error="The mail provider stayed unavailable; the message was not sent.")
        result = "failed"
    return {"outbox_id": outbox_id, "status": result}


@shared_task(name="mail.tasks.outbox_reconcile_due")
def outbox_reconcile_due(limit: int = 500):
    """Beat: queue a Sent-folder look for sends stuck in `sending` or `uncertain`.

    A worker killed mid-send leaves `sending`, and an answer lost after DATA leaves `uncertain`; if
    the broker never hands the task back, nothing else would return to them. Past
    AIEMAILY_SEND_STALE_SECONDS the queued task only reconciles (mail/send/outbox.py `_claim`): it never
    sends. A row already looked at waits another stale period before the next look. Reads across
    owners through the audited maintenance path; queues per-owner work only.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.AIEMAILY_SEND_STALE_SECONDS)
    Status = OutboxMessage.Status  # noqa: N806
    stuck = (OutboxMessage.objects.unscoped(reason="beat: reconcile sends stuck in sending/uncertain")
             .select_related("connection")
             .filter(sending_started_at__lte=cutoff, connection__status=Connection.Status.ACTIVE)
             .filter(Q(connection__provider=Connection.Provider.IMAP) | Q(connection__oauth_secret__isnull=False))
             .filter(Q(status=Status.SENDING) | Q(status=Status.UNCERTAIN, checked_at__isnull=True)
                     | Q(status=Status.UNCERTAIN, checked_at__lte=cutoff))
             .order_by("sending_started_at")[:limit])
    queued = 0
    for row in stuck:
        with owner_scope(row.owner_id):
            services.outbox_queue(row=row)
        queued += 1
    return {"reconcile_queued": queued}


def _oauth_send(leases, owner_id, row) -> str:
    """Open the access token (never logged or stored) and run one API send attempt."""
    try:
        token = lease_open(_access_lease(leases), owner_id=owner_id, connection_id=row.connection_id,
                           purpose=ACCESS_PURPOSE)
    except LeaseError:
        # Nothing was claimed or sent; count the attempt so a lease that never opens ends in failure.
        logger.warning("lease for outbox message %s did not open", row.pk)
        outbox.outbox_attempt_failed(owner_id=owner_id, outbox_id=row.pk,
                                     last_error="The mail worker could not use the credentials; trying again.")
        return "retry" if row.status == OutboxMessage.Status.QUEUED else "skipped"
    try:
        return outbox.send_via_api(token, owner_id, row.pk)
    finally:
        del token


# --- Gmail and Microsoft Graph (mail/sync/gmail.py, mail/sync/graph.py) -----------------------------
# Chained after secrets_vault.tasks.oauth_access_lease, which hands over one lease of a fresh access
# token (purpose "oauth_access_token"); a {purpose: lease} dict is accepted too, as from leases_issue.

OAUTH_SYNC_MODULES = {Connection.Provider.GMAIL: gmail, Connection.Provider.MICROSOFT: graph}


def _access_lease(leases) -> dict:
    if not isinstance(leases, dict):
        return {}  # lease_open refuses it as malformed
    return leases if "sealed" in leases else leases.get(ACCESS_PURPOSE) or {}


def _oauth_sync(provider: str, leases, owner_id, connection_id) -> dict:
    """Sync with a leased access token. The token is opened here, used, and dropped with the task;
    it is never logged, stored, or put in an error message."""
    with owner_scope(owner_id):
        # Owner-scoped (and RLS-bound): another owner's connection id finds nothing here.
        connection = Connection.objects.for_owner(owner_id).filter(pk=connection_id, provider=provider).first()
    if connection is None or connection.status == Connection.Status.DISCONNECTED:
        return {"connection_id": str(connection_id), "status": "gone"}
    try:
        token = lease_open(_access_lease(leases), owner_id=owner_id, connection_id=connection_id,
                           purpose=ACCESS_PURPOSE)
        try:
            progress = OAUTH_SYNC_MODULES[provider].sync_connection(token, owner_id, connection)
        finally:
            del token
    except TokenExpired:
        # Everything done so far is committed; a fresh lease (the vault refreshes) picks up from there.
        with owner_scope(owner_id):
            connection = Connection.objects.for_owner(owner_id).filter(pk=connection_id).first()
            if connection is None or connection.status != Connection.Status.ACTIVE:
                return {"connection_id": str(connection_id), "status": "stopped"}
            _save_progress(owner_id, connection_id, {"state": "queued", "last_error": ""})
            services.connection_sync_dispatch(connection=connection)
        return {"connection_id": str(connection_id), "status": "continuing"}
    except (ProviderError, LeaseError) as exc:
        message = exc.message if isinstance(exc, ProviderError) else "The mail worker could not use the credentials."
        _save_progress(owner_id, connection_id, Progress().as_state("error", message))
        if isinstance(exc, AuthFailed):
            with owner_scope(owner_id):
                services.connection_record_verification(owner_id=owner_id, connection_id=connection_id,
                                                        error_code=exc.code, error=exc.message)
        logger.warning("%s sync of connection %s failed: %s", provider, connection_id,
                       getattr(exc, "code", type(exc).__name__))
        return {"connection_id": str(connection_id), "status": "error",
                "code": getattr(exc, "code", "lease")}
    return {"connection_id": str(connection_id), "status": "synced", "messages": progress.done}


@shared_task(name="mail.tasks.gmail_sync", acks_late=True)
def gmail_sync(leases, owner_id, connection_id):
    """Sync a Gmail connection (full, then history-based). Safe to run again at any point."""
    return _oauth_sync(Connection.Provider.GMAIL, leases, owner_id, connection_id)


@shared_task(name="mail.tasks.graph_sync", acks_late=True)
def graph_sync(leases, owner_id, connection_id):
    """Sync a Microsoft connection (Graph delta per folder). Safe to run again at any point."""
    return _oauth_sync(Connection.Provider.MICROSOFT, leases, owner_id, connection_id)


@shared_task(name="mail.tasks.message_action", acks_late=True)
def message_action(leases, owner_id, message_id, action, params, attempt=1):
    """Apply archive / labels / read at the provider, then locally; retry only transient failures."""
    with owner_scope(owner_id):
        message = (Message.objects.for_owner(owner_id).select_related("folder", "connection")
                   .filter(pk=message_id).first())
    if message is None:
        return {"message_id": message_id, "status": "gone"}
    connection = message.connection
    if connection.provider != Connection.Provider.IMAP:
        return _oauth_action(leases, owner_id, message, action, params, attempt)
    try:
        password = lease_open(leases["imap_password"], owner_id=owner_id, connection_id=connection.pk,
                              purpose="imap_password")
        with imap_client(connection.imap_host, connection.imap_port, connection.imap_security,
                         connection.imap_username, password) as client:
            if action == "archive":
                actions.archive(client, owner_id, message)
            elif action == "labels":
                actions.set_labels(client, owner_id, message, params.get("add", []), params.get("remove", []))
            elif action == "read":
                actions.set_read(client, owner_id, message, bool(params["unread"]))
            else:
                raise ValueError(f"unknown action {action!r}")
    except MailServerError as exc:
        if exc.code in ("unreachable", "unavailable") and attempt < 5:
            with owner_scope(owner_id):
                services.message_action_queue(message=message, action=action, params=params, attempt=attempt + 1,
                                              countdown=30 * attempt)
            return {"message_id": message_id, "status": "retrying"}
        logger.warning("action %s on message %s failed: %s", action, message_id, exc.code)
        return {"message_id": message_id, "status": "failed", "code": exc.code}
    return {"message_id": message_id, "status": "done"}


def _oauth_action(leases, owner_id, message, action, params, attempt) -> dict:
    """Gmail modify / Graph move and PATCH with a leased access token (mail/send/actions.py). Every one
    of these is idempotent, so a lost answer is retried like a throttled one."""
    message_id = str(message.pk)
    try:
        token = lease_open(_access_lease(leases), owner_id=owner_id, connection_id=message.connection_id,
                           purpose=ACCESS_PURPOSE)
        api = actions.api_for(message.connection.provider, token)
        try:
            is_gmail = message.connection.provider == Connection.Provider.GMAIL
            (actions.gmail_apply if is_gmail else actions.graph_apply)(api, owner_id, message, action, params)
        finally:
            api.close()
            del token
    except (actions.Transient, actions.Ambiguous) as exc:
        if attempt < 5:
            with owner_scope(owner_id):
                services.message_action_queue(message=message, action=action, params=params, attempt=attempt + 1,
                                              countdown=30 * attempt)
            return {"message_id": message_id, "status": "retrying"}
        return {"message_id": message_id, "status": "failed", "code": exc.code}
    except (ProviderError, LeaseError) as exc:
        code = getattr(exc, "code", "lease")
        if isinstance(exc, AuthFailed):
            with owner_scope(owner_id):
                services.connection_record_verification(owner_id=owner_id, connection_id=message.connection_id,
                                                        error_code=exc.code, error=exc.message)
        logger.warning("action %s on message %s failed: %s", action, message_id, code)
        return {"message_id": message_id, "status": "failed", "code": code}
    return {"message_id": message_id, "status": "done"}


# --- push channels and webhook deliveries (mail/sync/push.py, mail/webhooks/) ----------------------------

@shared_task(name="mail.tasks.push_open", acks_late=True)
def push_open(leases, owner_id, connection_id):
    """Start or renew the mailbox's push channel (Gmail watch, Graph subscription) with a leased token."""
    with owner_scope(owner_id):
        connection = Connection.objects.for_owner(owner_id).filter(pk=connection_id).first()
    if connection is None or connection.status != Connection.Status.ACTIVE:
        return {"connection_id": str(connection_id), "status": "gone"}
    try:
        token = lease_open(_access_lease(leases), owner_id=owner_id, connection_id=connection_id,
                           purpose=ACCESS_PURPOSE)
        try:
            result = push.channel_open(token, owner_id, connection)
        finally:
            del token
    except (ProviderError, LeaseError) as exc:
        # Polling (sync_due) keeps the mailbox current; beat's push_renew_due tries again.
        logger.warning("push channel for connection %s not opened: %s", connection_id,
                       getattr(exc, "code", type(exc).__name__))
        return {"connection_id": str(connection_id), "status": "error"}
    return {"connection_id": str(connection_id), **result}


@shared_task(name="mail.tasks.push_close")
def push_close(lease, owner_id, connection_id, provider, external_id):
    """Disconnect: stop the push channel at the provider with the closing lease. Never raises, so the
    revocation chained after it always runs; a channel not stopped lapses by itself (retired here)."""
    if not lease:
        return {"connection_id": str(connection_id), "status": "no_lease"}
    try:
        token = lease_open(_access_lease(lease), owner_id=owner_id, connection_id=connection_id,
                           purpose=ACCESS_PURPOSE)
        try:
            result = push.channel_close(token, provider, external_id, connection_id)
        finally:
            del token
    except (ProviderError, LeaseError) as exc:
        logger.warning("push channel of connection %s not stopped: %s", connection_id,
                       getattr(exc, "code", type(exc).__name__))
        return {"connection_id": str(connection_id), "status": "error"}
    return {"connection_id": str(connection_id), **result}


@shared_task(name="mail.tasks.webhook_process", acks_late=True)
def webhook_process(ledger_ids, owner_id, connection_id, action):
    """Act on accepted webhook deliveries for one mailbox, by ledger id: each is claimed once.

    `sync` and `resync` (Graph `missed`) queue one sync (Gmail history / Graph delta from the stored
    cursor, which catches everything since); `reopen` (Graph reauthorizationRequired,
    subscriptionRemoved) renews or recreates the channel, then syncs.
    """
    claimed = [ledger_id for ledger_id in ledger_ids if delivery_claim(ledger_id=ledger_id)]
    if ledger_ids and not claimed:  # no ids at all: webhook_sweep's sync of a sibling mailbox
        return {"connection_id": str(connection_id), "status": "already_processed"}
    with owner_scope(owner_id):
        connection = Connection.objects.for_owner(owner_id).filter(pk=connection_id).first()
        if connection is None or connection.status != Connection.Status.ACTIVE or connection.oauth_secret_id is None:
            return {"connection_id": str(connection_id), "status": "gone"}
        if action == "reopen":
            services.connection_push_open_queue(connection=connection)
        services.connection_sync_dispatch(connection=connection)
    return {"connection_id": str(connection_id), "status": "queued", "claimed": len(claimed), "action": action}


# A delivery still open this long after it arrived lost its hand-off (the web process died before its
# relay published, or the broker was down: aiemaily/webhooks/handoff.py); Google and Microsoft keep no
# copy we could fetch, so a week back is plenty.
WEBHOOK_SWEEP_AFTER = timedelta(minutes=10)
WEBHOOK_SWEEP_WINDOW = timedelta(days=7)


@shared_task(name="mail.tasks.webhook_sweep")
def webhook_sweep():
    """Beat: hand accepted Gmail and Graph deliveries that were never processed to worker-sync again.

    The ledger knows the account, not the mailbox, so every push channel of that account and provider
    gets a sync: the first with the deliveries (claimed there), the others with none (a sync all the
    same). Deliveries of an account with no channel left are closed: there is nothing to sync.
    """
    now = timezone.now()
    rows = WebhookDelivery._base_manager.filter(
        provider__in=[Provider.GMAIL, Provider.GRAPH], verdict=Verdict.ACCEPTED, processed_at__isnull=True,
        received_at__lt=now - WEBHOOK_SWEEP_AFTER, received_at__gt=now - WEBHOOK_SWEEP_WINDOW,
    ).order_by("received_at").values_list("pk", "provider", "account_id")[:1000]
    groups: dict[tuple, list[str]] = {}
    for ledger_id, provider, account_id in rows:
        groups.setdefault((provider, account_id), []).append(str(ledger_id))
    for (provider, account_id), ledger_ids in groups.items():
        channels = list(WebhookSubscription._base_manager.filter(provider=provider, account_id=account_id)
                        .order_by("created_at").values_list("connection_id", flat=True))
        if not channels:
            for ledger_id in ledger_ids:
                delivery_claim(ledger_id=ledger_id)
            continue
        for n, connection_id in enumerate(channels):
            webhook_process.delay(ledger_ids if n == 0 else [], str(account_id), str(connection_id), "sync")
    if groups:
        logger.warning("%d push deliveries handed over again", sum(map(len, groups.values())),
                       extra={"event": "webhook_sweep"})
    return {"requeued": sum(map(len, groups.values())), "accounts": len(groups)}


@shared_task(name="mail.tasks.push_renew_due")
def push_renew_due():
    """Beat: open missing or lapsed push channels and renew those due (Gmail daily, Graph before expiry)."""
    queued = 0
    active = Connection.objects.unscoped(reason="beat: push channel renewal").filter(
        status=Connection.Status.ACTIVE, oauth_secret__isnull=False)
    for connection in active:
        if push.channel_due(connection):
            with owner_scope(connection.owner_id):
                services.connection_push_open_queue(connection=connection)
            queued += 1
    # Channels of disconnected mailboxes, kept so their last deliveries were recognised: once the
    # provider can no longer deliver on them (Gmail 7 days, Graph under 3), they go.


    purged = subscription_purge_retired(older_than=timedelta(days=8))
    return {"queued": queued, "purged": purged}
