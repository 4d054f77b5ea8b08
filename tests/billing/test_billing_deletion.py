"""Deleting an account closes its Stripe customer (subscription cancelled, customer deleted) through
billing's own task, outside the shredding chain: when Stripe is unreachable the closure is recorded
and retried by beat, and the keys and rows are destroyed on time all the same."""

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from accounts.tasks import account_purge
from aiemaily.celery import app as celery_app
from billing.events import stripe_event_apply, stripe_event_fetch
from billing.models import BillingAccount, StripeCleanup
from billing.tasks import stripe_cleanup_retry, stripe_cleanup_run
from secrets_vault.tasks import owner_shred
from tests.conftest import issue_tokens
from tests.harness.billing_fixtures import signed_in_client, stripe_fake, stripe_server
from tests.harness.factories import DEFAULT_PASSWORD

__all__ = ["stripe_fake", "stripe_server"]

pytestmark = pytest.mark.django_db(databases=["default", "vault"])


@pytest.fixture
def queued(monkeypatch):
    """What account deletion queues: billing's closure (by name) and the shredding chain."""
    sent = {"billing": [], "chains": []}
    monkeypatch.setattr(celery_app, "send_task",
                        lambda name, args=None, **kw: sent["billing"].append((name, list(args or []))))
    monkeypatch.setattr("celery.canvas._chain.apply_async", lambda self, *a, **k: sent["chains"].append(self))
    return sent


def pro_user(stripe_fake):
    page = signed_in_client()
    page.post("/billing/checkout", {"plan": "pro"})
    session_id = next(s for s, v in stripe_fake.sessions.items() if v["client_reference_id"] == str(page.user.pk))
    for event in stripe_fake.complete_checkout(session_id):
        stripe_event_apply(event=stripe_event_fetch(event["id"]))
    session = stripe_fake.sessions[session_id]
    return page.user, session["customer"], session["subscription"]


def delete_account(user, capture):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(client, user)["access"])
    with capture(execute=True):
        response = client.delete("/api/v1/account", {"password": DEFAULT_PASSWORD}, format="json")
    assert response.status_code == 202


def test_deleting_an_account_cancels_the_subscription_and_deletes_the_customer(
        stripe_fake, queued, django_capture_on_commit_callbacks):
    user, customer_id, subscription_id = pro_user(stripe_fake)
    delete_account(user, django_capture_on_commit_callbacks)
    ((name, (cleanup_id,)),) = queued["billing"]
    assert name == "billing.tasks.stripe_cleanup_run"
    cleanup = StripeCleanup.objects.get(pk=cleanup_id)
    assert (cleanup.stripe_customer_id, cleanup.stripe_subscription_id) == (customer_id, subscription_id)
    # The closure is not a step of the shredding chain: nothing there waits for Stripe.
    assert [t.name for t in queued["chains"][0].tasks] == ["secrets_vault.tasks.owner_shred",
                                                          "accounts.tasks.account_purge"]
    assert stripe_cleanup_run(cleanup_id) == {"done": True}
    assert stripe_fake.subscriptions[subscription_id]["status"] == "canceled"
    assert customer_id not in stripe_fake.customers
    cleanup.refresh_from_db()
    assert cleanup.done_at is not None and cleanup.last_error == ""
    # Run again (a redelivered task, or beat): nothing more is asked of Stripe.
    calls = len(stripe_fake.requests)
    assert stripe_cleanup_run(cleanup_id) == {"done": True} and len(stripe_fake.requests) == calls


def test_stripe_down_never_blocks_shredding_and_the_closure_is_retried(stripe_fake, queued,
                                                                      django_capture_on_commit_callbacks):
    user, customer_id, subscription_id = pro_user(stripe_fake)
    delete_account(user, django_capture_on_commit_callbacks)
    ((_, (cleanup_id,)),) = queued["billing"]
    stripe_fake.fail("/v1/subscriptions/", 503, times=3)  # stripe-python's own retries fail too
    assert stripe_cleanup_run(cleanup_id) == {"done": False}
    cleanup = StripeCleanup.objects.get(pk=cleanup_id)
    assert cleanup.done_at is None and cleanup.attempts == 1 and cleanup.last_error == "APIError"
    assert customer_id in stripe_fake.customers
    # The shredding goes ahead regardless: keys destroyed, the user and their billing row gone.
    owner_shred(str(user.pk))
    account_purge(str(user.pk))
    assert not User.objects.filter(pk=user.pk).exists()
    assert not BillingAccount._base_manager.filter(owner_id=user.pk).exists()
    # Beat's retry finishes the closure once Stripe answers; the row held only Stripe's ids.
    assert stripe_cleanup_retry() == {"pending": 1, "done": 1}
    assert customer_id not in stripe_fake.customers
    assert stripe_fake.subscriptions[subscription_id]["status"] == "canceled"
    assert StripeCleanup.objects.get(pk=cleanup_id).done_at is not None


def test_a_customer_already_gone_at_stripe_counts_as_closed(stripe_fake, queued, django_capture_on_commit_callbacks):
    user, customer_id, subscription_id = pro_user(stripe_fake)
    stripe_fake.customers.pop(customer_id)
    stripe_fake.subscriptions.pop(subscription_id)
    delete_account(user, django_capture_on_commit_callbacks)
    ((_, (cleanup_id,)),) = queued["billing"]
    assert stripe_cleanup_run(cleanup_id) == {"done": True}


def test_an_account_that_never_paid_leaves_nothing_to_close(stripe_fake, queued, django_capture_on_commit_callbacks):
    user = signed_in_client().user
    delete_account(user, django_capture_on_commit_callbacks)
    assert queued["billing"] == [] and not StripeCleanup.objects.exists()
    assert stripe_fake.requests == []


def test_a_closure_waits_while_billing_is_unconfigured(stripe_fake, queued, settings,
                                                       django_capture_on_commit_callbacks):
    user, customer_id, _ = pro_user(stripe_fake)
    delete_account(user, django_capture_on_commit_callbacks)
    ((_, (cleanup_id,)),) = queued["billing"]
    settings.STRIPE_SECRET_KEY = None
    assert stripe_cleanup_run(cleanup_id) == {"done": False}
    assert StripeCleanup.objects.get(pk=cleanup_id).last_error == "BillingNotConfigured"
    settings.STRIPE_SECRET_KEY = stripe_fake.token
    assert stripe_cleanup_retry() == {"pending": 1, "done": 1}
    assert customer_id not in stripe_fake.customers
