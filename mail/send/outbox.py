"""Sending mail exactly once: the outbox state machine and its reconciliation.

    queued ──► sending ──► sent
      ▲           │  └───► failed        (refused, or nothing reached the server's DATA phase)
      └───────────┤        (retry: the server was unreachable before DATA; nothing was handed over)
                  └──────► uncertain ──► sent    (its Message-ID is in the Sent folder)
                                    └──► failed  (still not there AIEMAILY_SEND_STALE_SECONDS after
                                                  the send began; the user is told it may have gone)

`sending` is committed before SMTP DATA. Once the server has invited the message body (354), it
may hold the message, so every later failure without an answer (a timeout, a closed or reset
connection, a worker killed) makes the row `uncertain`: never re-queued, never `failed` without
looking in the Sent folder. Only an explicit answer to the end of data decides at once (250 sent,
4xx/5xx refused). A task that finds a row still `sending` (a worker died, or the broker
redelivered) does not send: once the row is older than AIEMAILY_SEND_STALE_SECONDS it becomes
`uncertain` and the Sent folder decides. Beat (mail.tasks.outbox_reconcile_due) queues that look for
rows nobody else comes back to. Exactly one provider-side message, however the request or the task
is retried. The Message-ID is ours, generated once, and travels with the row.

Gmail and Microsoft connections run the same machine through their APIs (send_via_api below);
their Sent folder is searched by Message-ID (Gmail rfc822msgid:, Graph internetMessageId).
"""

import base64
import logging
import smtplib
from datetime import timedelta

from django.conf import settings
from django.db.models import F
from django.utils import timezone

from aiemaily.ownership.binding import owner_scope
from mail import blobstore, metadata
from mail.models import Connection, OutboxMessage
from mail.providers.mailservers import MailServerError, imap_client, smtp_session
from mail.send.actions import Ambiguous, Transient, api_for, call_once
from mail.services import connection_record_verification
from mail.sync.rest import AuthFailed, ProviderError
from secrets_vault.sealing import lease_open

logger = logging.getLogger(__name__)

# How long to wait for each SMTP answer. After DATA, no answer in time makes the send uncertain.
SMTP_TIMEOUT = 20

# What the user reads on the outbox page (last_error), in plain words.
INTERRUPTED = "The send was interrupted. We are checking your Sent folder to see whether it went out."
ANSWER_LOST = ("Your mail server took this message but never confirmed it. We are checking your Sent folder to "
               "see whether it went out; it will not be sent twice.")
NOT_YET = ("This message is not in your Sent folder yet. We will look again shortly; it will not be sent twice "
           "in the meantime.")
REFUSED_SOME = OutboxMessage.REFUSED_SOME
UNREADABLE = ("This message's recipients could not be read (they failed authentication), so it was not sent. "
              "Please write it again.")
NOT_CONFIRMED = ("We could not confirm this was sent: your mail server stopped answering while taking it, and it "
                 "is not in your Sent folder. It may still have arrived: check with the recipient before "
                 "sending it again.")


class LeasedPasswords:
    """The passwords a send may use, opened from their leases only when needed."""

    def __init__(self, leases: dict, owner_id, connection_id):
        self._leases, self._owner_id, self._connection_id = leases, owner_id, connection_id

    def has(self, purpose: str) -> bool:
        return purpose in self._leases

    def open(self, purpose: str):

        return lease_open(self._leases[purpose], owner_id=self._owner_id, connection_id=self._connection_id,
                          purpose=purpose)


def _claim(owner_id, outbox_id) -> tuple[OutboxMessage | None, str]:
    """Lock the row and decide: ('send' | 'reconcile' | 'skip')."""
    with owner_scope(owner_id):
        row = (OutboxMessage.objects.for_owner(owner_id).select_related("connection")
               .select_for_update(of=("self",)).filter(pk=outbox_id).first())
        if row is None or row.status in (OutboxMessage.Status.SENT, OutboxMessage.Status.FAILED):
            return row, "skip"
        now = timezone.now()
        if row.status == OutboxMessage.Status.SENDING:
            stale = now - timedelta(seconds=settings.AIEMAILY_SEND_STALE_SECONDS)
            if row.sending_started_at and row.sending_started_at > stale:
                return row, "skip"  # another worker is sending it right now (a duplicate delivery)
            row.status = OutboxMessage.Status.UNCERTAIN
            row.last_error = INTERRUPTED
            row.save(update_fields=["status", "last_error"])
        if row.status == OutboxMessage.Status.UNCERTAIN:
            return row, "reconcile"
        row.status, row.sending_started_at, row.attempts = OutboxMessage.Status.SENDING, now, row.attempts + 1
        row.save(update_fields=["status", "sending_started_at", "attempts"])
        return row, "send"


def _set(owner_id, outbox_id, **fields) -> None:
    with owner_scope(owner_id):
        OutboxMessage.objects.for_owner(owner_id).filter(pk=outbox_id).update(**fields)


def outbox_fail(*, owner_id, outbox_id, last_error: str) -> None:
    """Give up on a send (the provider stayed unavailable): the row ends `failed`, saying why."""
    _set(owner_id, outbox_id, status=OutboxMessage.Status.FAILED, last_error=last_error)


def outbox_attempt_failed(*, owner_id, outbox_id, last_error: str) -> None:
    """Count an attempt that reached nothing (the lease did not open), so retries end."""
    _set(owner_id, outbox_id, attempts=F("attempts") + 1, last_error=last_error)


def _settle(owner_id, outbox_id, **fields) -> bool:
    """Record a reconciliation result, but only on a row that is still uncertain."""
    with owner_scope(owner_id):
        return bool(OutboxMessage.objects.for_owner(owner_id)
                    .filter(pk=outbox_id, status=OutboxMessage.Status.UNCERTAIN).update(**fields))


def _sent_folder(client) -> str:
    for flags, _, name in client.list_folders():
        if b"\\Sent" in flags:
            return name
    for candidate in ("Sent", "Sent Items", "Sent Messages", "INBOX.Sent"):
        if client.folder_exists(candidate):
            return candidate
    client.create_folder("Sent")
    return "Sent"


def _in_sent_folder(client, message_id: str) -> bool:
    client.select_folder(_sent_folder(client), readonly=True)
    return bool(client.search(["HEADER", "Message-ID", message_id]))


def send(passwords: LeasedPasswords, owner_id, outbox_id) -> str:
    """Run one send attempt with leased passwords."""
    row, decision = _claim(owner_id, outbox_id)
    if decision == "skip":
        return "skipped" if row else "gone"  # already final, or being sent by another worker right now
    connection = row.connection
    if decision == "reconcile":
        return reconcile(passwords, owner_id, row, connection)
    with owner_scope(owner_id):  # the metadata key is read under the owner's binding (RLS)
        recipients, unreadable = [*row.to_addrs, *row.cc_addrs], metadata.unreadable(row)
    if unreadable:
        # Tampered with, or moved from another row: never send to what the database says instead.
        _set(owner_id, row.pk, status=OutboxMessage.Status.FAILED, last_error=UNREADABLE)
        return "failed"
    raw = blobstore.get(owner_id, row.blob_key)
    try:
        outcome, detail = _smtp_deliver(connection, passwords.open("smtp_password"), raw, recipients)
    except MailServerError as exc:
        # Raised only before the server invited the message body: it certainly does not have it.
        if exc.code in ("unreachable", "unavailable"):
            _set(owner_id, row.pk, status=OutboxMessage.Status.QUEUED, last_error=exc.message)
            return "retry"
        _set(owner_id, row.pk, status=OutboxMessage.Status.FAILED, last_error=exc.message)
        return "failed"
    if outcome == "lost":
        _set(owner_id, row.pk, status=OutboxMessage.Status.UNCERTAIN, last_error=ANSWER_LOST)
        return reconcile(passwords, owner_id, row, connection)
    if outcome == "refused":
        _set(owner_id, row.pk, status=OutboxMessage.Status.FAILED, last_error=detail)
        return "failed"
    _after_accept(passwords, owner_id, row, connection, raw)
    if detail:
        # Who was refused is sealed with the row's other addresses; last_error says only that some were.
        with owner_scope(owner_id):
            row.status, row.sent_at, row.last_error = OutboxMessage.Status.SENT, timezone.now(), REFUSED_SOME
            row.refused_addrs = sorted(detail)
            row.save(update_fields=["status", "sent_at", "last_error"])
        return "sent"
    _set(owner_id, row.pk, status=OutboxMessage.Status.SENT, sent_at=timezone.now(), last_error="")
    return "sent"


def _smtp_deliver(connection: Connection, password, raw: bytes, recipients: list[str]) -> tuple[str, object]:
    """('accepted', refused recipients) | ('refused', why) | ('lost', None).

    Raises MailServerError only while nothing past DATA happened. After the server's 354, an answer
    that never comes (timeout, closed or reset connection, anything else that goes wrong) is 'lost':
    the server may have the message. An explicit 4xx/5xx to the end of data is the server saying it
    did not take it: 'refused'.
    """
    with smtp_session(connection.smtp_host, connection.smtp_port, connection.smtp_security,
                      connection.smtp_username, password, timeout=SMTP_TIMEOUT) as smtp:
        try:
            return "accepted", smtp.sendmail(connection.email, recipients, raw)
        except smtplib.SMTPResponseException as exc:
            if not smtp.data_started:
                raise
            kind = "could not take it right now" if 400 <= exc.smtp_code < 500 else "refused it"
            return "refused", (f"Your mail server {kind} (SMTP {exc.smtp_code}); the message was not sent. "
                               "You can send it again.")
        except Exception as exc:
            if not smtp.data_started:
                raise
            logger.warning("SMTP answer lost after DATA for %s: %s", connection.pk, type(exc).__name__)
            return "lost", None


def _after_accept(passwords: LeasedPasswords, owner_id, row, connection, raw) -> None:
    """Keep a copy in the Sent folder (what reconciliation looks for). Failure here is not a resend."""
    if not passwords.has("imap_password"):
        return
    try:
        with imap_client(connection.imap_host, connection.imap_port, connection.imap_security,
                         connection.imap_username, passwords.open("imap_password")) as client:
            client.append(_sent_folder(client), raw, flags=[b"\\Seen"])
    except MailServerError as exc:
        logger.warning("sent message %s could not be copied to Sent: %s", row.pk, exc.code)


def reconcile(passwords: LeasedPasswords, owner_id, row: OutboxMessage, connection: Connection) -> str:
    """Look for the row's Message-ID in the Sent folder; never send. 'sent' | 'failed' | 'uncertain'."""
    try:
        with imap_client(connection.imap_host, connection.imap_port, connection.imap_security,
                         connection.imap_username, passwords.open("imap_password")) as client:
            found = _in_sent_folder(client, row.message_id)
    except MailServerError as exc:
        _could_not_look(owner_id, row, exc.message)
        return "uncertain"
    return _verdict(owner_id, row, found)


def _could_not_look(owner_id, row: OutboxMessage, why: str) -> None:
    # Without a look there is no verdict: the row stays uncertain and beat tries again later.
    _settle(owner_id, row.pk, checked_at=timezone.now(),
            last_error=f"We could not check your Sent folder yet ({why}) and will try again; it will not "
                       f"be sent twice."[:300])


def _verdict_due(row: OutboxMessage, now) -> bool:
    """A server or provider files a sent message within moments; after the stale period, absence counts."""
    began = row.sending_started_at or row.created_at
    return now - began >= timedelta(seconds=settings.AIEMAILY_SEND_STALE_SECONDS)


def _verdict(owner_id, row: OutboxMessage, found: bool) -> str:
    now = timezone.now()
    if found:
        settled = _settle(owner_id, row.pk, status=OutboxMessage.Status.SENT, sent_at=now, checked_at=now,
                          last_error="")
        return "sent" if settled else "skipped"
    if _verdict_due(row, now):
        settled = _settle(owner_id, row.pk, status=OutboxMessage.Status.FAILED, checked_at=now,
                          last_error=NOT_CONFIRMED)
        return "failed" if settled else "skipped"
    _settle(owner_id, row.pk, checked_at=now, last_error=NOT_YET)
    return "uncertain"


# --- Gmail and Microsoft Graph ---------------------------------------------------------------------
# Same state machine, one HTTP attempt per send (mail/actions.call_once): neither Gmail's
# messages.send nor Graph's sendMail takes an idempotency key, so the only safe repeat is one the
# provider certainly never processed (429, 503, no connection). Gmail gets the raw RFC 5322 bytes
# (base64url) and Graph the MIME send (base64 text/plain): both keep our Message-ID header, which is
# what reconciliation searches their Sent folder for. Both file the sent message in Sent
# themselves, so there is no copy to append.

def _api_send(api, provider: str, raw: bytes) -> None:
    if provider == Connection.Provider.GMAIL:
        call_once(api, "POST", "/gmail/v1/users/me/messages/send", what="send this message",
                  json={"raw": base64.urlsafe_b64encode(raw).decode().rstrip("=")})
    else:
        call_once(api, "POST", "/me/sendMail", what="send this message", data=base64.b64encode(raw),
                  headers={"Content-Type": "text/plain"})


def _api_in_sent(api, provider: str, message_id: str) -> bool:
    if provider == Connection.Provider.GMAIL:
        found = api.json("GET", "/gmail/v1/users/me/messages", params={
            "q": f"rfc822msgid:{message_id.strip('<>')}", "labelIds": "SENT", "includeSpamTrash": "true"})
        return bool(found.get("messages"))
    quoted = message_id.replace("'", "''")  # OData string literal
    found = api.json("GET", "/me/mailFolders/sentitems/messages", params={
        "$filter": f"internetMessageId eq '{quoted}'", "$select": "id,internetMessageId"})
    return bool(found.get("value"))


def _needs_reauth(owner_id, connection_id, message: str) -> None:
    with owner_scope(owner_id):
        connection_record_verification(owner_id=owner_id, connection_id=connection_id, error_code="auth_failed",
                                       error=message)


def send_via_api(token, owner_id, outbox_id) -> str:
    """One send attempt for a Gmail or Microsoft connection with a leased access token.

    'sent' | 'failed' | 'retry' (still queued: nothing reached the provider) | 'checking' (the
    answer was lost: uncertain, reconcile soon) | 'uncertain' | 'skipped' | 'gone'."""
    row, decision = _claim(owner_id, outbox_id)
    if decision == "skip":
        return "skipped" if row else "gone"
    connection = row.connection
    api = api_for(connection.provider, token)
    try:
        if decision == "reconcile":
            return _api_reconcile(api, owner_id, row, connection)
        raw = blobstore.get(owner_id, row.blob_key)
        try:
            _api_send(api, connection.provider, raw)
        except Transient as exc:
            _set(owner_id, row.pk, status=OutboxMessage.Status.QUEUED, last_error=exc.message[:300])
            return "retry"
        except Ambiguous as exc:
            _set(owner_id, row.pk, status=OutboxMessage.Status.UNCERTAIN,
                 last_error=f"{exc.message} Checking your Sent folder; it will not be sent twice."[:300])
            return "checking"
        except AuthFailed as exc:
            _set(owner_id, row.pk, status=OutboxMessage.Status.FAILED, last_error=exc.message[:300])
            _needs_reauth(owner_id, connection.pk, exc.message)
            return "failed"
        except ProviderError as exc:
            _set(owner_id, row.pk, status=OutboxMessage.Status.FAILED, last_error=exc.message[:300])
            return "failed"
        _set(owner_id, row.pk, status=OutboxMessage.Status.SENT, sent_at=timezone.now(), last_error="")
        return "sent"
    finally:
        api.close()


def _api_reconcile(api, owner_id, row: OutboxMessage, connection: Connection) -> str:
    try:
        found = _api_in_sent(api, connection.provider, row.message_id)
    except ProviderError as exc:
        if isinstance(exc, AuthFailed):
            _needs_reauth(owner_id, connection.pk, exc.message)
        _could_not_look(owner_id, row, exc.message)
        return "uncertain"
    return _verdict(owner_id, row, found)
