"""Checkout and Customer Portal: POSTs that send the browser to Stripe's hosted pages, through the
real stripe-python against the local Stripe API; the redirect back changes nothing."""

import pytest

from aiemaily.ownership.binding import owner_scope
from billing.models import BillingAccount
from tests.harness.billing_fixtures import PRICE_PRO, signed_in_client, stripe_fake, stripe_server
from tests.harness.factories import UserFactory

__all__ = ["stripe_fake", "stripe_server"]

pytestmark = pytest.mark.django_db


def _account(user):
    with owner_scope(user):
        return BillingAccount.objects.for_owner(user).first()


@pytest.mark.claim("billing-minimal-data")
def test_checkout_creates_a_customer_and_a_subscription_session_and_redirects(stripe_fake):
    client = signed_in_client()
    response = client.post("/billing/checkout", {"plan": "pro"})
    assert response.status_code == 302
    session = next(iter(stripe_fake.sessions.values()))
    assert response["Location"] == session["url"] and session["url"].startswith(stripe_fake.origin + "/pay/")
    assert session["mode"] == "subscription"
    assert session["client_reference_id"] == str(client.user.pk)
    assert session["line_items_params"] == [{"price": PRICE_PRO, "quantity": "1"}]
    assert session["success_url"] == "http://testserver/billing/success?session_id={CHECKOUT_SESSION_ID}"
    assert session["cancel_url"] == "http://testserver/billing/cancelled"
    assert session["subscription_metadata"] == {"aiemaily_owner": str(client.user.pk)}
    customer = stripe_fake.customers[session["customer"]]
    assert customer["metadata"] == {"aiemaily_owner": str(client.user.pk)} and customer["email"] == client.user.email
    account = _account(client.user)
    assert account.stripe_customer_id == customer["id"]
    # Nothing about the subscription is stored until Stripe's verified event says so.
    assert account.status == "" and account.plan == "free" and account.stripe_subscription_id == ""
    keys = [r.headers["idempotency-key"] for r in stripe_fake.requests if r.path.startswith("/v1/")]
    assert len(keys) == 2 and all(k.startswith("aiemaily-") for k in keys)


def test_a_second_checkout_reuses_the_customer(stripe_fake):
    client = signed_in_client()
    client.post("/billing/checkout", {"plan": "pro"})
    client.post("/billing/checkout", {"plan": "pro"})
    assert len(stripe_fake.customers) == 1
    assert len(stripe_fake.seen("/v1/customers")) == 1
    sessions = stripe_fake.seen("/v1/checkout/sessions")
    assert len(sessions) == 2
    # The same hour's double click replays the first session (Stripe's idempotency), not a second one.
    assert len(stripe_fake.sessions) == 1


def test_a_lost_answer_is_retried_with_the_same_key_and_creates_one_customer(stripe_fake):
    stripe_fake.drop_answer("/v1/customers")
    client = signed_in_client()
    response = client.post("/billing/checkout", {"plan": "pro"})
    assert response.status_code == 302
    assert len(stripe_fake.seen("/v1/customers")) == 2  # stripe-python retried the dropped call
    assert len(stripe_fake.customers) == 1


def test_stripe_down_is_a_message_not_a_500(stripe_fake):
    stripe_fake.fail("/v1/checkout/sessions", 500, times=5)
    client = signed_in_client()
    response = client.post("/billing/checkout", {"plan": "pro"}, follow=True)
    assert response.status_code == 200
    assert "Billing is not available right now" in response.content.decode()


def test_checkout_needs_a_login_and_a_post(stripe_fake):
    from django.test import Client

    anonymous = Client().post("/billing/checkout", {"plan": "pro"})
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    assert signed_in_client().get("/billing/checkout").status_code == 405
    assert stripe_fake.requests == []


def test_checkout_refuses_an_unknown_plan(stripe_fake):
    client = signed_in_client()
    response = client.post("/billing/checkout", {"plan": "enterprise-free-forever"})
    assert response.status_code == 302 and response["Location"] == "/billing/"
    assert stripe_fake.requests == []


@pytest.mark.claim("owner-scoping")
def test_a_checkout_is_always_for_the_signed_in_user(stripe_fake):
    victim = UserFactory()
    client = signed_in_client()
    client.post("/billing/checkout", {"plan": "pro", "client_reference_id": str(victim.pk),
                                      "owner": str(victim.pk), "customer": "cus_victim"})
    session = next(iter(stripe_fake.sessions.values()))
    assert session["client_reference_id"] == str(client.user.pk)
    assert session["customer"] != "cus_victim"
    assert _account(victim) is None


def test_portal_redirects_to_the_customers_portal(stripe_fake):
    client = signed_in_client()
    client.post("/billing/checkout", {"plan": "pro"})
    response = client.post("/billing/portal")
    assert response.status_code == 302
    portal = next(iter(stripe_fake.portal_sessions.values()))
    assert response["Location"] == portal["url"]
    assert portal["customer"] == _account(client.user).stripe_customer_id
    assert portal["return_url"] == "http://testserver/billing/"


def test_portal_without_a_customer_explains_instead_of_calling_stripe(stripe_fake):
    client = signed_in_client()
    response = client.post("/billing/portal", follow=True)
    assert "choose a plan first" in response.content.decode()
    assert stripe_fake.requests == []


def test_billing_unconfigured_says_so_and_calls_nobody(settings):
    settings.STRIPE_SECRET_KEY = None
    client = signed_in_client()
    page = client.get("/billing/")
    assert page.status_code == 200 and "Billing is not configured" in page.content.decode()
    response = client.post("/billing/checkout", {"plan": "pro"}, follow=True)
    assert "Billing is not configured" in response.content.decode()


def test_success_page_changes_nothing(stripe_fake):
    client = signed_in_client()
    client.post("/billing/checkout", {"plan": "pro"})
    session_id = next(iter(stripe_fake.sessions))
    page = client.get(f"/billing/success?session_id={session_id}")
    assert page.status_code == 200 and "Stripe is confirming your payment" in page.content.decode()
    assert _account(client.user).plan == "free"
    assert client.get("/billing/cancelled").status_code == 200


def test_billing_page_admits_exactly_the_hosted_origins_in_form_action(stripe_fake):
    client = signed_in_client()
    page = client.get("/billing/")
    policy = page["Content-Security-Policy"]
    form_action = next(d for d in policy.split(";") if d.strip().startswith("form-action"))
    assert form_action.split()[1:] == ["'self'", stripe_fake.origin]
    other = client.get("/dashboard/")["Content-Security-Policy"]
    assert stripe_fake.origin not in other
