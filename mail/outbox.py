"""Sending mail exactly once: the outbox state machine and its reconciliation.

    queued ──► sending ──► sent
                  │  └───► failed        (refused before the provider accepted anything)
                  └──────► uncertain ──► sent (its Message-ID is in the Sent folder)
                                    └──► stays uncertain, shown to the user: never resent blindly

`sending` is committed before SMTP DATA. A task that finds a row still `sending` (a worker died,
or the broker redelivered) does not send: once the row is older than AIEMAILY_SEND_STALE_SECONDS it
becomes `uncertain` and the Sent folder decides. Exactly one provider-side message, however the
request or the task is retried. The Message-ID is ours, generated once, and travels with the row.

Gmail and Microsoft connections run the same machine through their APIs (send_via_api below);
their Sent folder is searched by Message-ID (Gmail rfc822msgid:, Graph internetMessageId).
"""

import base64
import email.utils
import logging
from datetime import timedelta
from email.message import EmailMessage
from email.policy import SMTP

from django.conf import settings
from django.utils import timezone

from aiemaily.ownership.binding import owner_scope
from mail import blobstore
from mail.models import Connection, OutboxMessage
from mail.providers.mailservers import MailServerError, imap_client, smtp_session

logger = logging.getLogger(__name__)


class LeasedPasswords:
    """The passwords a send may use, opened from their leases only when needed."""

    def __init__(self, leases: dict, owner_id, connection_id):
        self._leases, self._owner_id, self._connection_id = leases, owner_id, connection_id

    def has(self, purpose: str) -> bool:
        return purpose in self._leases

    def open(self, purpose: str):
        from secrets_vault.sealing import lease_open

        return lease_open(self._leases[purpose], owner_id=self._owner_id, connection_id=self._connection_id,
                          purpose=purpose)


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


def outbox_create(*, owner, connection: Connection, to, cc, subject, body_text, in_reply_to="") -> OutboxMessage:
    from mail.services import outbox_queue

    message = build_message(connection=connection, to=to, cc=cc, subject=subject, body_text=body_text,
                            in_reply_to=in_reply_to)
    row = OutboxMessage(owner=owner, connection=connection, message_id=message["Message-ID"], to_addrs=list(to),
                        cc_addrs=list(cc), subject=subject, in_reply_to=in_reply_to)
    row.blob_key = blobstore.put(owner.pk, ("outbox", str(row.id)), message.as_bytes())
    row.save()
    outbox_queue(row=row)
    return row


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
            row.last_error = "The send was interrupted; checking the Sent folder."
            row.save(update_fields=["status", "last_error"])
        if row.status == OutboxMessage.Status.UNCERTAIN:
            return row, "reconcile"
        row.status, row.sending_started_at, row.attempts = OutboxMessage.Status.SENDING, now, row.attempts + 1
        row.save(update_fields=["status", "sending_started_at", "attempts"])
        return row, "send"


def _set(owner_id, outbox_id, **fields) -> None:
    with owner_scope(owner_id):
        OutboxMessage.objects.for_owner(owner_id).filter(pk=outbox_id).update(**fields)


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
    raw = blobstore.get(owner_id, row.blob_key)
    recipients = [*row.to_addrs, *row.cc_addrs]
    try:
        with smtp_session(connection.smtp_host, connection.smtp_port, connection.smtp_security,
                          connection.smtp_username, passwords.open("smtp_password")) as smtp:
            try:
                refused = smtp.sendmail(connection.email, recipients, raw)
            except Exception:
                # The server may have accepted DATA before the failure: we cannot know.
                _set(owner_id, row.pk, status=OutboxMessage.Status.UNCERTAIN,
                     last_error="The connection failed while sending; checking the Sent folder.")
                raise
    except MailServerError as exc:
        if exc.code in ("unreachable", "unavailable"):
            _set(owner_id, row.pk, status=OutboxMessage.Status.QUEUED, last_error=exc.message)
            return "retry"
        _set(owner_id, row.pk, status=OutboxMessage.Status.FAILED, last_error=exc.message)
        return "failed"
    _after_accept(passwords, owner_id, row, connection, raw)
    note = f"Refused by the server for: {', '.join(sorted(refused))}" if refused else ""
    _set(owner_id, row.pk, status=OutboxMessage.Status.SENT, sent_at=timezone.now(), last_error=note[:300])
    return "sent"


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
    try:
        with imap_client(connection.imap_host, connection.imap_port, connection.imap_security,
                         connection.imap_username, passwords.open("imap_password")) as client:
            found = _in_sent_folder(client, row.message_id)
    except MailServerError as exc:
        _set(owner_id, row.pk, last_error=f"Could not check the Sent folder yet: {exc.message}"[:300])
        return "uncertain"
    if found:
        _set(owner_id, row.pk, status=OutboxMessage.Status.SENT, sent_at=timezone.now(), last_error="")
        return "sent"
    _set(owner_id, row.pk, last_error="We could not confirm this was sent: it is not in your Sent folder. "
                                      "Check with the recipient before sending it again.")
    return "uncertain"



# --- Gmail and Microsoft Graph ---------------------------------------------------------------------
# Same state machine, one HTTP attempt per send (mail/actions.call_once): neither Gmail's
# messages.send nor Graph's sendMail takes an idempotency key, so the only safe repeat is one the
# provider certainly never processed (429, 503, no connection). Gmail gets the raw RFC 5322 bytes
# (base64url) and Graph the MIME send (base64 text/plain): both keep our Message-ID header, which is
# what reconciliation searches their Sent folder for. Both file the sent message in Sent
# themselves, so there is no copy to append.

def _api_send(api, provider: str, raw: bytes) -> None:
    from mail.actions import call_once

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
    from mail.services import connection_record_verification

    with owner_scope(owner_id):
        connection_record_verification(owner_id=owner_id, connection_id=connection_id, error_code="auth_failed",
                                       error=message)


def send_via_api(token, owner_id, outbox_id) -> str:
    """One send attempt for a Gmail or Microsoft connection with a leased access token.

    'sent' | 'failed' | 'retry' (still queued: nothing reached the provider) | 'checking' (the
    answer was lost: uncertain, reconcile soon) | 'uncertain' | 'skipped' | 'gone'."""
    from mail.actions import Ambiguous, Transient, api_for
    from mail.sync_rest import AuthFailed, ProviderError

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
                 last_error=f"{exc.message} Checking the Sent folder."[:300])
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
    from mail.sync_rest import AuthFailed, ProviderError

    try:
        found = _api_in_sent(api, connection.provider, row.message_id)
    except ProviderError as exc:
        if isinstance(exc, AuthFailed):
            _needs_reauth(owner_id, connection.pk, exc.message)
        _set(owner_id, row.pk, last_error=f"Could not check the Sent folder yet: {exc.message}"[:300])
        return "uncertain"
    if found:
        _set(owner_id, row.pk, status=OutboxMessage.Status.SENT, sent_at=timezone.now(), last_error="")
        return "sent"
    _set(owner_id, row.pk, last_error="We could not confirm this was sent: it is not in your Sent folder. "
                                      "Check with the recipient before sending it again.")
    return "uncertain"
