"""Background work of the billing app (queue `sync`): Stripe event processing and customer closure."""

import datetime as dt
import logging

import stripe
from celery import shared_task
from django.utils import timezone

from aiemaily.webhooks.models import Provider, Verdict, WebhookDelivery
from aiemaily.webhooks.services import delivery_claim
from billing import services
from billing.events import stripe_event_apply, stripe_event_fetch
from billing.models import StripeCleanup
from billing.stripe_api import BillingNotConfigured

logger = logging.getLogger(__name__)

# Errors worth another try: Stripe unreachable, rate-limited, or answering 5xx. Anything else (a 404
# for an event id Stripe does not know, a bad key) will not get better by waiting.
TRANSIENT = (stripe.APIConnectionError, stripe.RateLimitError)


def _transient(exc: stripe.StripeError) -> bool:
    return isinstance(exc, TRANSIENT) or (isinstance(exc, stripe.APIError) and (exc.http_status or 500) >= 500)


class _Retry(Exception):
    """Stripe did not answer this time (a transient error): try the event again later."""


def _event_process(ledger_id, *, retries_left: bool) -> str:
    """Apply one accepted Stripe delivery, named by its ledger row (the broker carries no payload).

    The event is re-fetched from Stripe by id, applied (idempotent and order-independent, see
    billing/events.py), and only then is the ledger row marked processed: a crash or an unreachable
    Stripe before that leaves the row open for a retry or the sweep, and an event applied twice
    changes nothing.
    """
    event_id = (WebhookDelivery._base_manager.filter(
        pk=ledger_id, provider=Provider.STRIPE, verdict=Verdict.ACCEPTED, processed_at__isnull=True)
        .values_list("delivery_id", flat=True).first())
    if event_id is None:
        return "gone"  # unknown, not an accepted Stripe delivery, or already processed
    try:
        outcome = stripe_event_apply(event=stripe_event_fetch(event_id))
    except BillingNotConfigured:
        # This worker has no Stripe key: leave the row open for the sweep once it has one.
        logger.error("stripe event %s not processed: billing is not configured on this worker", event_id,
                     extra={"event": "billing_event_failed"})
        return "not_configured"
    except stripe.StripeError as exc:
        if _transient(exc) and retries_left:
            logger.warning("stripe event %s not fetched (%s); retrying", event_id, type(exc).__name__,
                           extra={"event": "billing_event_retry"})
            raise _Retry from exc
        logger.error("stripe event %s dropped: %s", event_id, type(exc).__name__,
                     extra={"event": "billing_event_failed"})
        outcome = "failed"
    delivery_claim(ledger_id=ledger_id)
    logger.info("stripe event %s: %s", event_id, outcome, extra={"event": "billing_event"})
    return outcome


@shared_task(name="billing.tasks.stripe_event_process", bind=True, max_retries=8)
def stripe_event_process(self, ledger_id):
    """One delivery (the sweep's hand-over, or a batch's retry), retried with backoff while Stripe is away."""
    try:
        return {"outcome": _event_process(ledger_id, retries_left=self.request.retries < self.max_retries)}
    except _Retry as retry:
        raise self.retry(exc=retry.__cause__, countdown=min(600, 5 * 2 ** self.request.retries)) from None


@shared_task(name="billing.tasks.stripe_events_process")
def stripe_events_process(ledger_ids):
    """The deliveries /webhooks/stripe handed over together (aiemaily/webhooks/handoff.py), one by one;
    one that Stripe did not answer goes on alone to stripe_event_process, with its own retries."""
    outcomes = []
    for ledger_id in ledger_ids:
        try:
            outcomes.append(_event_process(ledger_id, retries_left=True))
        except _Retry:
            stripe_event_process.apply_async(args=[str(ledger_id)], countdown=5)
            outcomes.append("retrying")
    return {"outcomes": outcomes}  # in the order of ledger_ids


# A delivery still open this long after it arrived lost its task (retries exhausted, a worker without
# the key, a broker outage); Stripe keeps events for 30 days, we look back a week.
SWEEP_AFTER = dt.timedelta(minutes=10)
SWEEP_WINDOW = dt.timedelta(days=7)


@shared_task(name="billing.tasks.stripe_event_sweep")
def stripe_event_sweep():
    """Beat: hand accepted Stripe deliveries that were never processed to stripe_event_process again.
    Applying an event twice changes nothing, so a delivery whose task is merely slow is harmless."""
    now = timezone.now()
    open_ids = list(WebhookDelivery._base_manager.filter(
        provider=Provider.STRIPE, verdict=Verdict.ACCEPTED, processed_at__isnull=True,
        received_at__lt=now - SWEEP_AFTER, received_at__gt=now - SWEEP_WINDOW,
    ).order_by("received_at").values_list("pk", flat=True)[:500])
    for ledger_id in open_ids:
        stripe_event_process.delay(str(ledger_id))
    if open_ids:
        logger.warning("%d stripe deliveries handed over again", len(open_ids), extra={"event": "billing_event_sweep"})
    return {"requeued": len(open_ids)}


@shared_task(name="billing.tasks.stripe_cleanup_run")
def stripe_cleanup_run(cleanup_id):
    """Close a deleted account's Stripe customer; on failure the row stays for stripe_cleanup_retry."""
    return {"done": services.stripe_cleanup_run(cleanup_id=cleanup_id)}


@shared_task(name="billing.tasks.stripe_cleanup_retry")
def stripe_cleanup_retry():
    """Beat: retry the closures Stripe did not answer (rows hold Stripe ids only, no owner)."""
    pending = list(StripeCleanup.objects.filter(done_at__isnull=True).order_by("created_at")
                   .values_list("pk", flat=True)[:100])
    done = sum(services.stripe_cleanup_run(cleanup_id=pk) for pk in pending)
    return {"pending": len(pending), "done": done}
