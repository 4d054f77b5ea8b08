"""Writes of the billing app: opening Stripe-hosted pages, applying verified subscription state,
checking plan limits, and closing the Stripe customer when an account is deleted.

Status is written only by `subscription_state_apply`, which billing/events.py calls with objects
that came from Stripe's API (a verified event re-fetched by id, or a subscription re-fetched):
a browser returning from Checkout changes nothing.
"""

import datetime as dt
import logging
import time
from collections.abc import Callable

import stripe
from django.db import transaction
from django.utils import timezone
from rest_framework import status as http_status
from rest_framework.exceptions import APIException

from aiemaily.celery import app as celery_app
from billing import plans, stripe_api
from billing.models import BillingAccount, StripeCleanup
from billing.selectors import limit_reason

logger = logging.getLogger(__name__)

CLEANUP_TASK = "billing.tasks.stripe_cleanup_run"
LIVE_STATUSES = {"trialing", "active", "past_due", "unpaid", "paused", "incomplete"}


class PlanLimitReached(APIException):
    """What the user wants needs a plan they are not on. The message says why and where to upgrade."""

    status_code = http_status.HTTP_403_FORBIDDEN
    default_code = "plan_limit"
    default_detail = "Your plan does not include this. Upgrade at /billing/."


class BillingUnavailable(APIException):
    status_code = http_status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "billing_unavailable"
    default_detail = "Billing is not available right now; please try again in a few minutes."


def billing_account_get_or_create(*, owner) -> BillingAccount:
    account, _ = BillingAccount.objects.for_owner(owner).get_or_create(owner=owner)
    return account


def _locked_account(owner) -> BillingAccount:
    billing_account_get_or_create(owner=owner)
    return BillingAccount.objects.for_owner(owner).select_for_update().get()


def _customer_ensure(account: BillingAccount, owner) -> str:
    """The user's Stripe customer: reused when we have one, else created once (idempotency key per
    user) and stored before anything else uses it. Only the user id goes to Stripe as metadata; the
    e-mail address lets Stripe send receipts."""
    if account.stripe_customer_id:
        return account.stripe_customer_id
    customer = stripe_api.client().v1.customers.create(
        params={"email": owner.email, "metadata": {"aiemaily_owner": str(owner.pk)}},
        options=stripe_api.options("customer", owner.pk),
    )
    account.stripe_customer_id = customer.id
    account.save(update_fields=["stripe_customer_id", "updated_at"])
    return customer.id


def checkout_start(*, owner, plan: str, success_url: str, cancel_url: str) -> str:
    """A Stripe Checkout Session (subscription mode) for `owner`; returns the hosted page's URL."""
    price = plans.price_for_plan(plan)
    with transaction.atomic():
        account = _locked_account(owner)
        if account.status in {"active", "trialing", "past_due"} and account.plan == plan:
            raise PlanLimitReached("You are already on this plan; manage it from the billing page.")
        try:
            customer_id = _customer_ensure(account, owner)
            # The same user, customer and price within the same hour reuse one session (a double
            # click opens the same page); a later attempt, or one after a subscription came and
            # went, gets a fresh one.
            bucket = int(time.time()) // 3600
            session = stripe_api.client().v1.checkout.sessions.create(
                params={
                    "mode": "subscription",
                    "customer": customer_id,
                    "client_reference_id": str(owner.pk),
                    "line_items": [{"price": price, "quantity": 1}],
                    "success_url": success_url + "?session_id={CHECKOUT_SESSION_ID}",
                    "cancel_url": cancel_url,
                    # Subscription events carry this, so each event finds its owner without a
                    # cross-owner lookup; the customer id is then checked against the owner's.
                    "subscription_data": {"metadata": {"aiemaily_owner": str(owner.pk)}},
                },
                options=stripe_api.options("checkout", owner.pk, customer_id, price, bucket,
                                          account.stripe_subscription_id),
            )
        except stripe.StripeError as exc:
            logger.warning("stripe checkout failed: %s", type(exc).__name__, extra={"event": "billing_stripe_error"})
            raise BillingUnavailable() from exc
    logger.info("checkout session created for %s", owner.pk, extra={"event": "billing_checkout"})
    return session.url


def portal_start(*, owner, return_url: str) -> str:
    """A Stripe Customer Portal session (plan changes, payment methods, cancellation)."""
    account = billing_account_get_or_create(owner=owner)
    if not account.stripe_customer_id:
        raise PlanLimitReached("There is no subscription to manage yet: choose a plan first.")
    try:
        session = stripe_api.client().v1.billing_portal.sessions.create(
            params={"customer": account.stripe_customer_id, "return_url": return_url},
            # A portal session is short-lived and single-use: one key per minute.
            options=stripe_api.options("portal", owner.pk, account.stripe_customer_id, int(time.time()) // 60),
        )
    except stripe.StripeError as exc:
        logger.warning("stripe portal failed: %s", type(exc).__name__, extra={"event": "billing_stripe_error"})
        raise BillingUnavailable() from exc
    return session.url


def _subscription_price_and_period(subscription) -> tuple[str, dt.datetime | None]:
    # Since API version 2025-03-31 the period lives on the subscription's items.
    items = (subscription.get("items") or {}).get("data") or []
    price = ""
    ends = []
    for item in items:
        price = price or ((item.get("price") or {}).get("id") or "")
        if item.get("current_period_end"):
            ends.append(item["current_period_end"])
    if subscription.get("current_period_end"):
        ends.append(subscription["current_period_end"])
    period_end = dt.datetime.fromtimestamp(max(ends), tz=dt.UTC) if ends else None
    return price, period_end


def subscription_state_apply(*, owner_id, subscription: dict, as_of: dt.datetime) -> BillingAccount:
    """Store what a Stripe subscription object says (it came from Stripe's API, never a browser).

    The caller (billing/events.py) has already checked that the subscription's customer is this
    owner's and that `subscription` is at least as new as the stored state.
    """
    account = _locked_account(owner_id)
    price, period_end = _subscription_price_and_period(subscription)
    new_status = subscription.get("status") or ""
    if new_status == "past_due" and account.status != "past_due":
        account.past_due_since = as_of
    elif new_status != "past_due":
        account.past_due_since = None
    account.stripe_subscription_id = subscription["id"]
    account.stripe_price_id = price
    account.plan = plans.plan_for_price(price) if new_status not in ("canceled", "incomplete_expired") else plans.FREE
    account.status = new_status if new_status in BillingAccount.Status.values else ""
    account.current_period_end = period_end
    account.cancel_at_period_end = bool(subscription.get("cancel_at_period_end"))
    account.state_as_of = max(filter(None, [account.state_as_of, as_of]))
    account.save()
    logger.info("billing state %s/%s for %s", account.plan, account.status, owner_id,
                extra={"event": "billing_state"})
    return account


def limit_check(*, owner, feature: str, current: int = 0) -> None:
    """Raise PlanLimitReached unless `owner`'s plan allows `feature` (see selectors.limit_reason)."""
    reason = limit_reason(owner=owner, feature=feature, current=current)
    if reason:
        raise PlanLimitReached(reason)


def mailbox_slot_check(*, owner, in_use: Callable[[], int]) -> None:
    """Before a new mailbox is recorded: PlanLimitReached when the plan's mailboxes are all in use.

    `in_use` counts the owner's mailboxes (the caller's app knows what counts). The owner's billing
    row is locked first, so two additions at once are counted one after the other; the caller must
    create the mailbox inside the same transaction.
    """
    if not plans.limits_apply():
        return
    _locked_account(owner)
    limit_check(owner=owner, feature="mailboxes", current=in_use())


def platform_ai_check(*, owner) -> None:
    """Before AI runs on the platform's key: PlanLimitReached unless the plan includes it."""
    limit_check(owner=owner, feature="platform_ai")


# --- account deletion ---------------------------------------------------------------------------

def billing_account_close(*, owner) -> None:
    """Account deletion: remember the Stripe customer to close and queue the closure. Never blocks:
    the Stripe call happens in a task and is retried by beat until Stripe answers."""
    account = BillingAccount.objects.for_owner(owner).filter(stripe_customer_id__gt="").first()
    if account is None:
        return
    cleanup, _ = StripeCleanup.objects.get_or_create(
        stripe_customer_id=account.stripe_customer_id,
        defaults={"stripe_subscription_id": account.stripe_subscription_id})
    cleanup_id = str(cleanup.pk)
    # Sent by name (billing.tasks imports this module); queue `sync` by the billing.tasks.* route.
    transaction.on_commit(lambda: celery_app.send_task(CLEANUP_TASK, args=[cleanup_id]))
    logger.info("stripe customer closure %s recorded", cleanup_id, extra={"event": "billing_cleanup_recorded"})


def stripe_cleanup_run(*, cleanup_id) -> bool:
    """Cancel the subscription (if live) and delete the customer at Stripe; record the outcome.
    Deleting the customer cancels its subscriptions too; cancelling first states the intent."""
    cleanup = StripeCleanup.objects.filter(pk=cleanup_id, done_at__isnull=True).first()
    if cleanup is None:
        return True
    try:
        api = stripe_api.client()
    except stripe_api.BillingNotConfigured:
        # The key was removed since the customer was made: keep the row for when it is back.
        StripeCleanup.objects.filter(pk=cleanup.pk).update(attempts=cleanup.attempts + 1,
                                                           last_error="BillingNotConfigured")
        logger.warning("stripe cleanup %s waits: billing is not configured", cleanup.pk,
                       extra={"event": "billing_cleanup_retry"})
        return False
    try:
        if cleanup.stripe_subscription_id:
            try:
                api.v1.subscriptions.cancel(cleanup.stripe_subscription_id,
                                            options=stripe_api.options("cancel", cleanup.stripe_subscription_id))
            except stripe.InvalidRequestError as exc:
                if exc.http_status != 404 and getattr(exc, "code", "") != "resource_missing":
                    raise
        try:
            api.v1.customers.delete(cleanup.stripe_customer_id,
                                    options=stripe_api.options("customer-delete", cleanup.stripe_customer_id))
        except stripe.InvalidRequestError as exc:
            if exc.http_status != 404:
                raise
    except stripe.StripeError as exc:
        StripeCleanup.objects.filter(pk=cleanup.pk).update(
            attempts=cleanup.attempts + 1, last_error=type(exc).__name__[:200])
        logger.warning("stripe cleanup %s failed (%s); will retry", cleanup.pk, type(exc).__name__,
                       extra={"event": "billing_cleanup_retry"})
        return False
    StripeCleanup.objects.filter(pk=cleanup.pk).update(attempts=cleanup.attempts + 1, last_error="",
                                                       done_at=timezone.now())
    logger.info("stripe customer closed for cleanup %s", cleanup.pk, extra={"event": "billing_cleanup_done"})
    return True
