"""`POST /webhooks/stripe`: Stripe's signed events, verified with stripe-python's own check.

Stripe signs `"{t}.{body}"` with HMAC-SHA256 under the endpoint's signing secret and sends
`Stripe-Signature: t=…,v1=…[,v1=…]` (several v1 values while a secret is being rolled). We accept
every secret listed in STRIPE_WEBHOOK_SECRETS (or _FILE), so both the old and the new secret work
during a rotation; stripe.WebhookSignature.verify_header does the comparison (constant time) and
the 300-second tolerance. A timestamp further than the tolerance in the *future* is refused too
(stripe-python only checks the past).

Then the event id is inserted into the ledger (the replay check) and the event is handed to
billing by ledger row id: `billing.tasks.stripe_events_process([ledger ids])`, sent by name so this
base app does not import billing, in batches (aiemaily/webhooks/handoff.py). The body is not stored
and not put on the broker: the billing task re-fetches the event from Stripe's API by its id
(`stripe.Event.retrieve`), which is what Stripe recommends anyway — it yields the event's current
state and cannot be forged by anyone who only learned a signing secret. The ledger row gives that task the event id.

Answers: 200 for an accepted event or a replay (so Stripe stops retrying), 400 with an empty
body for anything not authentic, stale, future or malformed.
"""

import json
import re
import time

import stripe
from django.conf import settings
from django.db import transaction

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
from aiemaily.webhooks.services import delivery_accept, delivery_reject

PROCESS_TASK = "billing.tasks.stripe_events_process"
CONTENT_TYPES = frozenset({"application/json"})
_EVENT_ID = re.compile(r"^evt_[A-Za-z0-9_]{1,250}$")
_TYPE = re.compile(r"^[a-z0-9_.]{1,64}$")


def verify(raw: bytes, header: str, *, secrets: list[str], tolerance: int, now: float | None = None) -> dict:
    """The verified event as a dict, or Rejected with the verdict. Authenticate, then freshness."""
    if not secrets:
        # Not configured: nothing can be authentic. Refused, never accepted unverified.
        raise Rejected(Verdict.BAD_SIGNATURE, 400)
    try:
        payload = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(Verdict.MALFORMED, 400) from None
    verdict = Verdict.BAD_SIGNATURE
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance)
        except stripe.SignatureVerificationError as exc:
            # Only raised after the signature matched: the secret is right, the timestamp old.
            if "tolerance" in str(exc):
                verdict = Verdict.STALE
            continue
        verdict = Verdict.ACCEPTED
        break
    if verdict != Verdict.ACCEPTED:
        raise Rejected(verdict, 400)
    timestamp, _ = stripe.WebhookSignature._get_timestamp_and_signatures(header, "v1")
    if timestamp > (now or time.time()) + tolerance:
        raise Rejected(Verdict.FUTURE, 400)
    try:
        event = json.loads(payload)
    except ValueError:
        raise Rejected(Verdict.MALFORMED, 400) from None
    if not isinstance(event, dict) or event.get("object") != "event" or not _EVENT_ID.match(str(event.get("id"))):
        raise Rejected(Verdict.MALFORMED, 400)
    return event


def hand_to_billing(ledger_id) -> None:
    """Queue billing's processing of one accepted event, after the ledger row is committed."""
    transaction.on_commit(lambda: handoff(PROCESS_TASK, (), ledger_id))


# No transaction around it (see webhook_endpoint): each outcome is one INSERT in the ledger (the
# accepted row, or the rejected/replay row), and the hand-off is published after that INSERT has
# committed, exactly as on_commit would publish it at the end of a transaction.
@webhook_endpoint(atomic=False)
def stripe_webhook(request):
    ip = client_address(request)
    if throttled(Provider.STRIPE, ip):
        return empty(429)
    try:
        raw = read_body(request, limit=settings.AIEMAILY_WEBHOOK_STRIPE_MAX_BYTES, content_types=CONTENT_TYPES,
                        malformed_status=400)
        event = verify(raw, request.headers.get("Stripe-Signature", ""), secrets=settings.STRIPE_WEBHOOK_SECRETS,
                       tolerance=settings.STRIPE_WEBHOOK_TOLERANCE_SECONDS)
    except Rejected as rejected:
        if count_failure(Provider.STRIPE, ip):
            return empty(429)
        delivery_reject(provider=Provider.STRIPE, verdict=rejected.verdict, client_ip=ip)
        return empty(rejected.status)
    kind = event.get("type") if _TYPE.match(str(event.get("type"))) else ""
    recorded = delivery_accept(provider=Provider.STRIPE, delivery_id=event["id"], kind=kind)
    if recorded.accepted:
        hand_to_billing(recorded.delivery.pk)
    return empty(200)
