"""Stripe events through the real route: signed as Stripe signs them, POSTed to /webhooks/stripe,
verified and deduplicated there, handed to billing.tasks.stripe_events_process by ledger id (in batches), and
applied from the event re-fetched from the (local) Stripe API. Duplicated, reordered and delayed
deliveries end in the right state; a forged one changes nothing; Stripe being unreachable while
the task runs leaves the delivery open for a retry instead of losing it."""

import datetime as dt
import logging

import pytest
from celery.exceptions import Retry
from django.test import Client
from django.utils import timezone

from aiemaily.celery import app as celery_app
from aiemaily.ownership.binding import owner_scope
from aiemaily.webhooks import handoff
from aiemaily.webhooks.models import WebhookDelivery
from billing.models import BillingAccount
from billing.tasks import stripe_event_process, stripe_event_sweep, stripe_events_process
from tests.harness.billing_fixtures import WEBHOOK_SECRET, signed_in_client, stripe_fake, stripe_server
from tests.harness.stripe_api_server import signed

__all__ = ["stripe_fake", "stripe_server"]

pytestmark = pytest.mark.django_db


@pytest.fixture
def handed(monkeypatch):
    """The ledger ids the route hands to billing (Celery's send, captured where it leaves the route)."""
    sent: list[str] = []

    def send_task(name, args=None, kwargs=None, **options):
        # The route's batches, or the sweep's hand-over of one delivery at a time.
        assert name in ("billing.tasks.stripe_events_process", "billing.tasks.stripe_event_process")
        sent.extend(args[0] if name.endswith("events_process") else args)

    monkeypatch.setattr(celery_app, "send_task", send_task)
    return sent


def deliver(event: dict, *, secret: str = WEBHOOK_SECRET, capture) -> int:
    """POST one event as Stripe does; the on-commit hand-off runs; returns the HTTP status."""
    payload, header = signed(event, secret)
    with capture(execute=True):
        response = Client().post("/webhooks/stripe", payload, content_type="application/json",
                                 HTTP_STRIPE_SIGNATURE=header, REMOTE_ADDR="192.0.2.10")
    assert handoff.flush()  # what the relay publishes within AIEMAILY_WEBHOOK_HANDOFF_MS
    return response.status_code


def run_handed(handed: list[str]) -> list[str]:
    """Run the handed-over batch as a worker would; returns the outcomes, in order."""
    outcomes = stripe_events_process.apply(args=[list(handed)]).get()["outcomes"]
    handed.clear()
    return outcomes


def _checkout(stripe_fake, client=None):
    client = client or signed_in_client()
    client.post("/billing/checkout", {"plan": "pro"})
    session_id = [s for s, v in stripe_fake.sessions.items() if v["client_reference_id"] == str(client.user.pk)][-1]
    events = stripe_fake.complete_checkout(session_id)
    return client.user, events, stripe_fake.sessions[session_id]["subscription"]


def _state(user):
    with owner_scope(user):
        account = BillingAccount.objects.for_owner(user).get()
    return account.plan, account.status, account.cancel_at_period_end


def test_a_checkout_delivered_in_reverse_and_twice_makes_the_user_pro_once(stripe_fake, handed,
                                                                          django_capture_on_commit_callbacks):
    user, events, _ = _checkout(stripe_fake)
    for event in reversed(events):
        assert deliver(event, capture=django_capture_on_commit_callbacks) == 200
    for event in events:  # Stripe redelivers: answered 200, never handed over again
        assert deliver(event, capture=django_capture_on_commit_callbacks) == 200
    assert len(handed) == 3
    run_handed(handed)
    assert _state(user) == ("pro", "active", False)
    ledger = WebhookDelivery.objects.unscoped(reason="test").filter(provider="stripe")
    assert sorted(ledger.values_list("verdict", flat=True)) == ["accepted"] * 3 + ["replay"] * 3
    assert all(row.processed_at for row in ledger.filter(verdict="accepted"))


def test_a_task_delivered_twice_applies_once(stripe_fake, handed, django_capture_on_commit_callbacks):
    user, events, _ = _checkout(stripe_fake)
    for event in events:
        deliver(event, capture=django_capture_on_commit_callbacks)
    ids = list(handed)
    run_handed(handed)
    assert [stripe_event_process.apply(args=[i]).get()["outcome"] for i in ids] == ["gone"] * 3
    assert _state(user) == ("pro", "active", False)


def test_deleted_before_updated_through_the_route_ends_cancelled(stripe_fake, handed,
                                                                 django_capture_on_commit_callbacks):
    user, events, subscription_id = _checkout(stripe_fake)
    stripe_fake.advance(10)
    updated = stripe_fake.update(subscription_id, cancel_at_period_end=True)
    stripe_fake.advance(10)
    deleted = stripe_fake.cancel(subscription_id)
    for event in [deleted, updated, *events]:  # the newest first, the checkout's own events last
        deliver(event, capture=django_capture_on_commit_callbacks)
    run_handed(handed)
    assert _state(user)[:2] == ("free", "canceled")


def test_a_delayed_payment_failure_does_not_undo_the_later_payment(stripe_fake, handed,
                                                                   django_capture_on_commit_callbacks):
    user, events, subscription_id = _checkout(stripe_fake)
    stripe_fake.advance(5)
    failed = stripe_fake.fail_payment(subscription_id)
    stripe_fake.advance(5)
    paid = stripe_fake.pay(subscription_id)
    for event in [*events, *paid]:
        deliver(event, capture=django_capture_on_commit_callbacks)
    run_handed(handed)
    for event in failed:  # delivered late
        deliver(event, capture=django_capture_on_commit_callbacks)
    assert run_handed(handed) == ["refetched", "refetched"]
    assert _state(user)[:2] == ("pro", "active")


@pytest.mark.claim("webhook-authenticity")
def test_an_event_signed_with_another_secret_changes_nothing(stripe_fake, handed,
                                                             django_capture_on_commit_callbacks):
    user, events, _ = _checkout(stripe_fake)
    for event in events:
        assert deliver(event, secret="whsec_not_the_endpoints_secret", capture=django_capture_on_commit_callbacks) \
            == 400
    assert handed == []
    assert _state(user) == ("free", "", False)
    assert not stripe_fake.seen("/v1/events/")


def test_stripe_unreachable_while_processing_leaves_the_delivery_open_and_the_retry_applies_it(
        stripe_fake, handed, django_capture_on_commit_callbacks):
    user, events, _ = _checkout(stripe_fake)
    completed = events[1]
    deliver(completed, capture=django_capture_on_commit_callbacks)
    ledger_id = handed[0]
    stripe_fake.fail("/v1/events/", 503, times=3)  # stripe-python's own two retries fail too
    with pytest.raises(Retry):
        stripe_event_process.apply(args=[ledger_id], throw=True)
    row = WebhookDelivery.objects.unscoped(reason="test").get(pk=ledger_id)
    assert row.processed_at is None
    assert _state(user) == ("free", "", False)
    assert stripe_event_process.apply(args=[ledger_id]).get()["outcome"] == "refetched"
    assert _state(user) == ("pro", "active", False)


@pytest.mark.claim("owner-scoping")
def test_an_event_for_another_users_customer_is_refused_logged_and_closed(stripe_fake, handed, caplog,
                                                                         django_capture_on_commit_callbacks):
    victim = signed_in_client()
    victim.post("/billing/checkout", {"plan": "pro"})
    attacker, events, _ = _checkout(stripe_fake)
    completed = events[1]
    # The session as Stripe returns it names the victim (a session created elsewhere with their id).
    stored = next(e for e in stripe_fake.events if e["id"] == completed["id"])
    stored["data"]["object"]["client_reference_id"] = str(victim.user.pk)
    deliver(completed, capture=django_capture_on_commit_callbacks)
    with caplog.at_level(logging.WARNING, logger="billing.events"):
        assert run_handed(handed) == ["refused"]
    assert any("refused" in r.getMessage() for r in caplog.records)
    assert _state(victim.user) == ("free", "", False)
    assert _state(attacker) == ("free", "", False)


def test_a_delivery_whose_task_was_lost_is_handed_over_again_by_the_sweep(stripe_fake, handed,
                                                                        django_capture_on_commit_callbacks):
    user, events, _ = _checkout(stripe_fake)
    for event in events:
        deliver(event, capture=django_capture_on_commit_callbacks)
    lost, handed[:] = list(handed), []  # the broker lost them
    ledger = WebhookDelivery.objects.unscoped(reason="test")
    assert stripe_event_sweep.apply().get() == {"requeued": 0}  # too recent: their tasks may be running
    ledger.filter(pk__in=lost[:2]).update(received_at=timezone.now() - dt.timedelta(minutes=11))
    ledger.filter(pk=lost[2]).update(received_at=timezone.now() - dt.timedelta(days=8))  # beyond the window
    assert stripe_event_sweep.apply().get() == {"requeued": 2}
    assert sorted(handed) == sorted(lost[:2])
    run_handed(handed)
    assert _state(user) == ("pro", "active", False)
    assert stripe_event_sweep.apply().get() == {"requeued": 0}  # processed rows are left alone


def test_a_worker_without_the_stripe_key_leaves_the_delivery_open(stripe_fake, handed, settings,
                                                                  django_capture_on_commit_callbacks):
    user, events, _ = _checkout(stripe_fake)
    deliver(events[1], capture=django_capture_on_commit_callbacks)
    settings.STRIPE_SECRET_KEY = None
    assert run_handed(list(handed)) == ["not_configured"]
    assert WebhookDelivery.objects.unscoped(reason="test").get(pk=handed[0]).processed_at is None
    settings.STRIPE_SECRET_KEY = stripe_fake.token
    assert run_handed(handed) == ["refetched"]
    assert _state(user) == ("pro", "active", False)
