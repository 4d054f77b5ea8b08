"""Billing state from Stripe events only: applied idempotently and in any order, each event checked
against the owner it names. Events are fetched back from the local Stripe API by id, as the webhook
task does (the ledger keeps no payload); tests/billing/test_billing_webhooks.py drives the same through the
real signed route."""

import datetime as dt
import logging

import pytest

from aiemaily.ownership.binding import owner_scope
from billing.events import stripe_event_apply, stripe_event_fetch
from billing.models import BillingAccount
from billing.selectors import plan_limits_for as _plan_limits_for
from tests.harness.billing_fixtures import PRICE_PRO, signed_in_client, stripe_fake, stripe_server

__all__ = ["stripe_fake", "stripe_server"]

pytestmark = pytest.mark.django_db


def _account(user):
    with owner_scope(user):
        return BillingAccount.objects.for_owner(user).first()


def plan_limits_for(user, **kwargs):
    with owner_scope(user):  # as in a request or an owner task
        return _plan_limits_for(user, **kwargs)


def _apply(event) -> str:
    return stripe_event_apply(event=stripe_event_fetch(event["id"]))


def _checkout(stripe_fake, client=None):
    client = client or signed_in_client()
    client.post("/billing/checkout", {"plan": "pro"})
    session_id = [s for s, v in stripe_fake.sessions.items() if v["client_reference_id"] == str(client.user.pk)][-1]
    events = stripe_fake.complete_checkout(session_id)
    subscription_id = stripe_fake.sessions[session_id]["subscription"]
    return client.user, events, subscription_id


def _state(user):
    account = _account(user)
    return (account.plan, account.status, account.stripe_subscription_id, account.cancel_at_period_end,
            account.current_period_end)


@pytest.mark.claim("billing-minimal-data")
def test_a_completed_checkout_makes_the_user_pro_with_only_ids_and_status_stored(stripe_fake):
    user, events, subscription_id = _checkout(stripe_fake)
    assert [_apply(e) for e in events] == ["applied", "refetched", "refetched"]
    account = _account(user)
    assert (account.plan, account.status, account.stripe_subscription_id) == ("pro", "active", subscription_id)
    assert account.stripe_price_id == PRICE_PRO
    period_end = stripe_fake.subscriptions[subscription_id]["items"]["data"][0]["current_period_end"]
    assert account.current_period_end == dt.datetime.fromtimestamp(period_end, tz=dt.UTC)
    limits = plan_limits_for(user)
    assert limits.plan == "pro" and limits.platform_ai and limits.max_mailboxes == 10
    # Promise 9: Stripe ids, the plan and the status; no e-mail, card, address or invoice.
    stored = {f.name for f in BillingAccount._meta.get_fields()}
    assert stored == {"id", "owner", "stripe_customer_id", "stripe_subscription_id", "stripe_price_id", "plan",
                      "status", "current_period_end", "cancel_at_period_end", "state_as_of", "past_due_since",
                      "updated_at"}


def test_duplicated_events_change_nothing_the_second_time(stripe_fake):
    user, events, _ = _checkout(stripe_fake)
    for event in events:
        _apply(event)
    before = _state(user)
    for event in events + events:
        _apply(event)
    assert _state(user) == before


def test_updated_before_created_ends_with_the_update(stripe_fake):
    user, events, subscription_id = _checkout(stripe_fake)
    stripe_fake.advance(10)
    updated = stripe_fake.update(subscription_id, cancel_at_period_end=True)
    assert _apply(updated) == "applied"
    assert _apply(events[0]) == "refetched"  # created: older than what is stored
    for event in events[1:]:
        _apply(event)
    assert _state(user)[:4] == ("pro", "active", subscription_id, True)


def test_deleted_before_updated_ends_cancelled(stripe_fake):
    user, events, subscription_id = _checkout(stripe_fake)
    for event in events:
        _apply(event)
    stripe_fake.advance(10)
    updated = stripe_fake.update(subscription_id, cancel_at_period_end=True)
    stripe_fake.advance(10)
    deleted = stripe_fake.cancel(subscription_id)
    assert _apply(deleted) == "applied"
    assert _apply(updated) == "refetched"
    assert _state(user)[:2] == ("free", "canceled")
    assert not plan_limits_for(user).platform_ai


def test_a_delayed_event_never_overwrites_newer_state(stripe_fake):
    user, events, subscription_id = _checkout(stripe_fake)
    stripe_fake.advance(5)
    failed = stripe_fake.fail_payment(subscription_id)
    stripe_fake.advance(5)
    paid = stripe_fake.pay(subscription_id)
    for event in [*events, *paid]:
        _apply(event)
    assert _state(user)[1] == "active"
    gets_before = len(stripe_fake.seen(f"/v1/subscriptions/{subscription_id}"))
    for event in failed:  # a day late
        assert _apply(event) == "refetched"
    assert len(stripe_fake.seen(f"/v1/subscriptions/{subscription_id}")) > gets_before
    assert _state(user)[:2] == ("pro", "active")


def test_every_order_of_a_subscription_history_ends_in_the_same_state(stripe_fake):
    import itertools

    user, events, subscription_id = _checkout(stripe_fake)
    stripe_fake.advance(3)
    history = [*events, stripe_fake.update(subscription_id, cancel_at_period_end=True)]
    stripe_fake.advance(3)
    history += stripe_fake.fail_payment(subscription_id)
    stripe_fake.advance(3)
    history.append(stripe_fake.cancel(subscription_id))
    orders = [history[::-1], *itertools.islice(itertools.permutations(history), 1, None, 631)]
    for order in orders:
        with owner_scope(user):
            BillingAccount.objects.for_owner(user).update(
                status="", plan="free", stripe_subscription_id="", state_as_of=None, past_due_since=None)
        for event in order:
            _apply(event)
        assert _state(user)[:2] == ("free", "canceled"), [e["type"] for e in order]


def test_past_due_keeps_pro_for_the_grace_period_then_not(stripe_fake, settings):
    user, events, subscription_id = _checkout(stripe_fake)
    for event in events:
        _apply(event)
    stripe_fake.advance(5)
    for event in stripe_fake.fail_payment(subscription_id):
        _apply(event)
    account = _account(user)
    assert account.status == "past_due" and account.past_due_since is not None
    limits = plan_limits_for(user)
    assert limits.plan == "pro" and limits.platform_ai and "payment failed" in limits.reason
    later = account.past_due_since + dt.timedelta(days=settings.AIEMAILY_BILLING_GRACE_DAYS, seconds=1)
    expired = plan_limits_for(user, now=later)
    assert expired.plan == "free" and not expired.platform_ai and "grace period has ended" in expired.reason
    stripe_fake.advance(5)
    for event in stripe_fake.pay(subscription_id):
        _apply(event)
    assert _account(user).past_due_since is None and plan_limits_for(user, now=later).plan == "pro"


def test_a_new_subscription_is_not_undone_by_the_old_ones_late_events(stripe_fake):
    client = signed_in_client()
    user, first, old_id = _checkout(stripe_fake, client)
    for event in first:
        _apply(event)
    stripe_fake.advance(5)
    cancelled = stripe_fake.cancel(old_id)
    _apply(cancelled)
    stripe_fake.advance(5)
    user, second, new_id = _checkout(stripe_fake, client)
    assert new_id != old_id
    for event in second:
        _apply(event)
    assert _state(user)[:3] == ("pro", "active", new_id)
    for event in [*first, cancelled]:
        _apply(event)
    assert _state(user)[:3] == ("pro", "active", new_id)


def test_unrelated_event_types_are_ignored(stripe_fake):
    assert stripe_event_apply(event={"id": "evt_1", "type": "customer.created", "created": 1,
                                     "data": {"object": {"id": "cus_1"}}}) == "ignored"
    assert stripe_event_apply(event={"id": "evt_2", "type": "invoice.paid", "created": 1,
                                     "data": {"object": {"id": "in_1", "customer": "cus_1"}}}) == "ignored"


@pytest.mark.claim("owner-scoping")
def test_a_checkout_naming_another_user_is_refused_and_logged(stripe_fake, caplog):
    victim = signed_in_client()
    victim.post("/billing/checkout", {"plan": "pro"})
    attacker, events, _ = _checkout(stripe_fake)
    completed = stripe_fake.events[-2]
    assert completed["type"] == "checkout.session.completed"
    completed["data"]["object"]["client_reference_id"] = str(victim.user.pk)
    with caplog.at_level(logging.WARNING, logger="billing.events"):
        assert _apply(completed) == "refused"
    assert any("refused" in r.getMessage() and completed["id"] in r.getMessage() for r in caplog.records)
    assert _account(victim.user).status == "" and _account(victim.user).plan == "free"


@pytest.mark.claim("owner-scoping")
def test_a_subscription_naming_another_user_is_refused(stripe_fake, caplog):
    victim = signed_in_client()
    victim.post("/billing/checkout", {"plan": "pro"})
    attacker, events, subscription_id = _checkout(stripe_fake)
    # The attacker's subscription, relabelled (say, in the dashboard) to point at the victim.
    stripe_fake.subscriptions[subscription_id]["metadata"]["aiemaily_owner"] = str(victim.user.pk)
    stripe_fake.advance(5)
    updated = stripe_fake.update(subscription_id, cancel_at_period_end=False)
    with caplog.at_level(logging.WARNING, logger="billing.events"):
        assert _apply(updated) == "refused"
        assert _apply(stripe_fake.pay(subscription_id)[0]) == "refused"
    assert _account(victim.user).plan == "free" and _account(victim.user).status == ""
    assert sum("refused" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.parametrize("reference", ["", "not-a-uuid", "00000000-0000-0000-0000-000000000000", None])
def test_a_checkout_without_a_valid_owner_is_refused(stripe_fake, reference):
    _, events, _ = _checkout(stripe_fake)
    completed = events[1]
    completed["data"]["object"]["client_reference_id"] = reference
    assert stripe_event_apply(event=completed) == "refused"
