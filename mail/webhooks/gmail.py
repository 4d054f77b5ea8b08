"""`POST /webhooks/gmail`: Gmail changes, pushed by Cloud Pub/Sub with a Google-signed OIDC token.

Order (aiemaily/webhooks/services.py): the bearer token is verified first (google-auth, Google's
cached certificates; audience, issuer, push service account, email_verified; `iat`/`exp` are the
freshness check), then the Pub/Sub envelope is parsed, the mailbox found by the keyed hash of the
`emailAddress` it names, and the Pub/Sub `messageId` inserted into the ledger (the replay check).
Only a `historyId` newer than the last one queued moves the push cursor (a conditional UPDATE) and
queues `mail.tasks.webhook_process(ledger ids, owner, connection, "sync")`: a history sync from the
stored cursor, which picks up this change and any other since. On PostgreSQL the lookup, the insert
and the UPDATE are one statement (services.push_record): one round trip per push.

Answers, with empty bodies: 204 for an accepted push, a replay, or a mailbox we do not watch
(Pub/Sub acknowledges on 2xx and would otherwise retry for days); 403 when the token is not
Google's for us, stale or future; 400 for a malformed envelope; 429 for a sender over its failure budget.
"""

import base64
import binascii
import json
import re

from django.conf import settings
from django.db import transaction

from aiemaily.webhooks.google_oidc import verify_push_token
from aiemaily.webhooks.handoff import handoff
from aiemaily.webhooks.http import (
    Rejected,
    client_address,
    count_failure,
    empty,
    read_body,
    throttled,
    webhook_endpoint,
)
from aiemaily.webhooks.models import Provider, Verdict
from aiemaily.webhooks.services import address_digest, delivery_reject, push_record

PROCESS_TASK = "mail.tasks.webhook_process"
CONTENT_TYPES = frozenset({"application/json"})
_MESSAGE_ID = re.compile(r"^[0-9A-Za-z_-]{1,128}$")
_ADDRESS = re.compile(r"^[^\s@]{1,200}@[^\s@]{1,200}$")


def _b64(data: str) -> bytes:
    """Pub/Sub's `data` is standard base64; the URL-safe alphabet is accepted too."""
    padded = data + "=" * (-len(data) % 4)
    altchars = b"-_" if "-" in data or "_" in data else None
    return base64.b64decode(padded, altchars=altchars, validate=True)


def parse(raw: bytes) -> tuple[str, str, int]:
    """(Pub/Sub messageId, mailbox address, historyId) from a push envelope, or Rejected(malformed)."""
    try:
        envelope = json.loads(raw)
        message = envelope["message"]
        message_id = message.get("messageId") or message.get("message_id")
        data = message["data"]
        notification = json.loads(_b64(data))
        address, history_id = notification["emailAddress"], int(notification["historyId"])
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error, RecursionError):
        raise Rejected(Verdict.MALFORMED, 400) from None
    if (not isinstance(message_id, str) or not _MESSAGE_ID.fullmatch(message_id) or not isinstance(address, str)
            or not _ADDRESS.fullmatch(address) or not 0 < history_id < 2**63):
        raise Rejected(Verdict.MALFORMED, 400)
    return message_id, address, history_id


def queue_processing(ledger_ids: list, owner_id, connection_id, action: str) -> None:
    """Once committed, hand the deliveries to worker-sync: `webhook_process([ids], owner, mailbox, action)`,
    gathered with the mailbox's other deliveries of the moment (aiemaily/webhooks/handoff.py)."""
    group = (str(owner_id), str(connection_id), action)

    def hand_over():
        for ledger_id in ledger_ids:
            handoff(PROCESS_TASK, group, ledger_id)

    transaction.on_commit(hand_over)


# No transaction around it (see webhook_endpoint): every outcome is one write, or one statement that
# does the three writes of an accepted push together (push_record); a replay's ledger row follows it.
@webhook_endpoint(atomic=False)
def gmail_webhook(request):
    ip = client_address(request)
    if throttled(Provider.GMAIL, ip):
        return empty(429)
    try:
        raw = read_body(request, limit=settings.AIEMAILY_WEBHOOK_GMAIL_MAX_BYTES, content_types=CONTENT_TYPES,
                        malformed_status=400)
        verify_push_token(request.headers.get("Authorization", ""))
        message_id, address, history_id = parse(raw)
    except Rejected as rejected:
        if count_failure(Provider.GMAIL, ip):
            return empty(429)
        delivery_reject(provider=Provider.GMAIL, verdict=rejected.verdict, client_ip=ip)
        return empty(rejected.status)
    pushed = push_record(provider=Provider.GMAIL, external_id=address_digest(address), delivery_id=message_id,
                         kind="push", position=history_id)
    if pushed.channel is None:
        # Google's, but for no mailbox we watch (disconnected, or a stale watch): acknowledged, dropped.
        delivery_reject(provider=Provider.GMAIL, verdict=Verdict.UNKNOWN_SUBSCRIPTION, delivery_id=message_id,
                        kind="push", client_ip=ip)
    elif pushed.recorded is None:
        # A lapsed or retired watch (the mailbox was disconnected): Google's, but nothing to do.
        delivery_reject(provider=Provider.GMAIL, verdict=Verdict.STALE, delivery_id=message_id, kind="push",
                        account_id=pushed.channel.account_id, client_ip=ip)
    elif pushed.advanced:
        queue_processing([pushed.recorded.delivery.pk], pushed.channel.account_id, pushed.channel.connection_id,
                         "sync")
    return empty(204)
