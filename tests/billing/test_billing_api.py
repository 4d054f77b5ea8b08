"""GET /api/v1/billing (the caller's plan, status and limits, read-only), the staff admin view of
billing (status, never card data, read-only), and the cross-owner cases of the billing pages."""

import pytest
from rest_framework.test import APIClient

from aiemaily.ownership.binding import owner_scope
from billing.events import stripe_event_apply, stripe_event_fetch
from billing.models import BillingAccount
from tests.conftest import issue_tokens
from tests.harness.billing_fixtures import signed_in_client, stripe_fake, stripe_server
from tests.harness.factories import UserFactory, staff_admin_client

__all__ = ["stripe_fake", "stripe_server"]

pytestmark = pytest.mark.django_db


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(client, user)["access"])
    return client


def pro_user(stripe_fake):
    page = signed_in_client()
    page.post("/billing/checkout", {"plan": "pro"})
    session_id = next(s for s, v in stripe_fake.sessions.items() if v["client_reference_id"] == str(page.user.pk))
    for event in stripe_fake.complete_checkout(session_id):
        stripe_event_apply(event=stripe_event_fetch(event["id"]))
    return page.user


def test_it_answers_the_callers_plan_status_and_limits(stripe_fake, settings):
    settings.AIEMAILY_BILLING_PRO_MAILBOXES = 7
    user = pro_user(stripe_fake)
    body = api_for(user).get("/api/v1/billing").json()
    assert body["configured"] is True and (body["plan"], body["status"]) == ("pro", "active")
    assert body["current_period_end"] and body["cancel_at_period_end"] is False
    assert body["limits"] == {"max_mailboxes": 7, "platform_ai": True, "byok_ai": True, "reason": ""}


def test_a_new_user_is_on_free(stripe_fake, settings):
    settings.AIEMAILY_BILLING_FREE_MAILBOXES = 1
    body = api_for(UserFactory()).get("/api/v1/billing").json()
    assert (body["plan"], body["status"], body["current_period_end"]) == ("free", "", None)
    assert body["limits"]["max_mailboxes"] == 1 and body["limits"]["platform_ai"] is False
    assert body["limits"]["byok_ai"] is True and body["limits"]["reason"] == "You have no subscription."


def test_unconfigured_billing_says_so_and_limits_nothing(settings):
    settings.STRIPE_SECRET_KEY = None
    settings.STRIPE_PRICE_PRO = None
    body = api_for(UserFactory()).get("/api/v1/billing").json()
    assert body["configured"] is False and body["plan"] == "free"
    assert body["limits"]["max_mailboxes"] is None and body["limits"]["platform_ai"] is True


def test_it_needs_a_token_and_is_read_only(stripe_fake):
    assert APIClient().get("/api/v1/billing").status_code == 401
    client = api_for(UserFactory())
    for method in ("post", "put", "patch", "delete"):
        response = getattr(client, method)("/api/v1/billing", {"plan": "pro", "status": "active"}, format="json")
        assert response.status_code == 405, method
        assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.claim("owner-scoping")
def test_no_parameter_shows_or_changes_another_users_billing(stripe_fake):
    victim = pro_user(stripe_fake)
    with owner_scope(victim):
        account = BillingAccount.objects.for_owner(victim).get()
    stranger = api_for(UserFactory())
    for query in (f"?owner={victim.pk}", f"?id={account.pk}", f"?customer={account.stripe_customer_id}"):
        body = stranger.get("/api/v1/billing" + query).json()
        assert (body["plan"], body["status"]) == ("free", ""), query
    assert stranger.get(f"/api/v1/billing/{account.pk}").status_code == 404


@pytest.mark.claim("owner-scoping")
def test_the_portal_opens_only_for_the_signed_in_users_own_customer(stripe_fake):
    victim = pro_user(stripe_fake)
    with owner_scope(victim):
        victim_customer = BillingAccount.objects.for_owner(victim).get().stripe_customer_id
    stranger = signed_in_client()
    answer = stranger.post("/billing/portal", {"customer": victim_customer, "owner": str(victim.pk)}, follow=True)
    assert "choose a plan first" in answer.content.decode()
    assert stripe_fake.portal_sessions == {}
    page = stranger.get("/billing/").content.decode()
    assert 'data-plan="free"' in page and victim_customer not in page


@pytest.mark.django_db(transaction=True, databases=["default", "maintenance"])
def test_staff_see_billing_status_read_only_and_nothing_about_cards(stripe_fake):
    user = pro_user(stripe_fake)
    with owner_scope(user):
        account = BillingAccount.objects.for_owner(user).get()
    staff = UserFactory(is_staff=True, is_superuser=True)
    client = staff_admin_client(staff)  # the admin needs the second factor
    listing = client.get("/admin/billing/billingaccount/")
    assert listing.status_code == 200 and str(account.pk) in listing.content.decode()
    detail = client.get(f"/admin/billing/billingaccount/{account.pk}/change/").content.decode()
    assert "active" in detail and account.stripe_customer_id in detail
    for word in ("card", "last4", "iban", "address"):
        assert word not in detail.lower().replace("cancel_at_period_end", ""), word
    assert client.get("/admin/billing/billingaccount/add/").status_code == 403
    assert client.post(f"/admin/billing/billingaccount/{account.pk}/delete/", {"post": "yes"}).status_code == 403
