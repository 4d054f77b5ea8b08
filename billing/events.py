"""Applying verified Stripe events to billing state, idempotently and in any order.

The webhook route (verified signature, fresh timestamp, ledger dedupe) hands us an event id; the
task re-fetches the event from Stripe's API, so everything here came from Stripe itself. Rules:

- Only these events change state: checkout.session.completed, customer.subscription.created /
  updated / deleted, invoice.paid, invoice.payment_failed. Anything else is ignored.
- Each event names its owner: the Checkout Session's client_reference_id, or the subscription's
  `aiemaily_owner` metadata (set at checkout). The Stripe customer it carries must be the one stored
  for that owner, else the event is refused and logged: nobody receives another user's event.
- An older event never overwrites newer state: a subscription snapshot is applied as is only when
  its event is strictly newer than the stored state; otherwise (same second, older, delayed, or an
  event that carries no subscription) the subscription is re-fetched from Stripe and that is stored.
- A subscription other than the stored one takes over only when the stored one is no longer live.
"""

import datetime as dt
import logging
import uuid

from django.utils import timezone

from aiemaily.ownership.binding import owner_scope
from billing import stripe_api
from billing.models import BillingAccount
from billing.services import subscription_state_apply

logger = logging.getLogger(__name__)

HANDLED = {
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
}
LIVE = {"trialing", "active", "past_due", "unpaid", "paused"}


class EventRefused(Exception):
    """The event does not belong to the owner it names (or names none): logged, never applied."""


def _owner_id(value) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except (TypeError, ValueError):
        raise EventRefused("no valid owner reference") from None


def _created(event: dict) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(event["created"]), tz=dt.UTC)


def _fetch_subscription(subscription_id: str) -> dict:
    subscription = stripe_api.client().v1.subscriptions.retrieve(
        subscription_id, options=stripe_api.options("subscription-get", subscription_id, timezone.now().timestamp()))
    return subscription.to_dict()


def _invoice_subscription_id(invoice: dict) -> str:
    # API versions before 2025-03-31 put it on the invoice; later ones under parent.subscription_details.
    direct = invoice.get("subscription")
    if isinstance(direct, dict):
        direct = direct.get("id")
    if direct:
        return direct
    details = ((invoice.get("parent") or {}).get("subscription_details") or {})
    return details.get("subscription") or ""


def _account_for(owner_id: str, customer_id) -> BillingAccount:
    account = BillingAccount.objects.for_owner(owner_id).select_for_update().first()
    if account is None or not account.stripe_customer_id or account.stripe_customer_id != customer_id:
        raise EventRefused("customer does not match the owner's")
    return account


def _apply(event: dict, owner_id: str, subscription: dict, *, fetched: bool) -> str:
    """Under the owner's binding: check ownership, order and supersession, then store. The account row
    stays locked (select_for_update) until the state is stored, so two events for one owner processed
    at once are serialised and the order check sees the other's result."""
    with owner_scope(owner_id):
        account = _account_for(owner_id, subscription.get("customer"))
        created = _created(event)
        if account.stripe_subscription_id and account.stripe_subscription_id != subscription["id"]:
            if account.status in LIVE:
                current = _fetch_subscription(account.stripe_subscription_id)
                if current.get("status") in LIVE:
                    logger.info("stripe event %s about subscription %s ignored: %s is still live",
                                event.get("id"), subscription["id"], account.stripe_subscription_id,
                                extra={"event": "billing_event_superseded"})
                    return "superseded"
        stale = account.state_as_of is not None and created <= account.state_as_of
        switching = bool(account.stripe_subscription_id) and account.stripe_subscription_id != subscription["id"]
        if not fetched and (stale or switching):
            subscription, fetched = _fetch_subscription(subscription["id"]), True
            if subscription.get("customer") != account.stripe_customer_id:
                raise EventRefused("customer does not match the owner's")
        as_of = max(filter(None, [account.state_as_of, created, timezone.now() if fetched else None]))
        subscription_state_apply(owner_id=owner_id, subscription=subscription, as_of=as_of)
    return "refetched" if fetched else "applied"


def stripe_event_apply(*, event: dict) -> str:
    """Apply one event (a dict as Stripe's API returns it). Returns what happened, for logs and tests:
    ignored | applied | refetched | superseded | refused."""
    kind, event_id = event.get("type"), event.get("id")
    if kind not in HANDLED:
        return "ignored"
    obj = ((event.get("data") or {}).get("object")) or {}
    try:
        if kind == "checkout.session.completed":
            if obj.get("mode") != "subscription" or not obj.get("subscription"):
                return "ignored"
            owner_id = _owner_id(obj.get("client_reference_id"))
            with owner_scope(owner_id):
                _account_for(owner_id, obj.get("customer"))  # before any call to Stripe
            subscription = _fetch_subscription(obj["subscription"])
            if subscription.get("customer") != obj.get("customer"):
                raise EventRefused("the session's subscription belongs to another customer")
            return _apply(event, owner_id, subscription, fetched=True)
        if kind.startswith("customer.subscription."):
            owner_id = _owner_id((obj.get("metadata") or {}).get("aiemaily_owner"))
            return _apply(event, owner_id, obj, fetched=False)
        subscription_id = _invoice_subscription_id(obj)
        if not subscription_id:
            return "ignored"  # a one-off invoice: nothing to do with plans
        subscription = _fetch_subscription(subscription_id)
        if subscription.get("customer") != obj.get("customer"):
            raise EventRefused("the invoice's subscription belongs to another customer")
        owner_id = _owner_id((subscription.get("metadata") or {}).get("aiemaily_owner"))
        return _apply(event, owner_id, subscription, fetched=True)
    except EventRefused as exc:
        logger.warning("stripe event %s (%s) refused: %s", event_id, kind, exc,
                       extra={"event": "billing_event_refused"})
        return "refused"


def stripe_event_fetch(event_id: str) -> dict:
    """The event as Stripe's API has it (the ledger stores no payload, only the verified id)."""
    return stripe_api.client().v1.events.retrieve(
        event_id, options=stripe_api.options("event-get", event_id)).to_dict()



