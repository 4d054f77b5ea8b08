"""Promise 9: card data only at Stripe; we keep Stripe's ids and the subscription's status.

Proven three ways: the billing tables, as PostgreSQL has them, have only the allowed columns; a
full subscription history whose Stripe objects are full of personal and card data (the way real
ones are: payment method, card, billing address, cardholder name, invoice amounts) leaves none of
it in any table or log line after going through the real webhook route and task; and what our
server sends to Stripe and shows to the user carries nothing beyond ids, plan and status.
"""

import logging

import pytest
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from aiemaily.ownership.binding import owner_scope
from aiemaily.webhooks import handoff
from billing.tasks import stripe_events_process
from tests.conftest import issue_tokens
from tests.harness.billing_fixtures import WEBHOOK_SECRET, signed_in_client, stripe_fake, stripe_server
from tests.harness.stripe_api_server import signed

__all__ = ["stripe_fake", "stripe_server"]

pytestmark = [pytest.mark.django_db, pytest.mark.claim("billing-minimal-data")]

# What Stripe holds about a paying customer, planted in every object it sends us.
CANARIES = {
    "name": "Canary Q. Cardholder",
    "line1": "742 Evergreen Canary Terrace",
    "postal_code": "CANARY-90210",
    "phone": "+1-555-CANARY-01",
    "fingerprint": "CanaryFingerprint0xDEADBEEF",
    "pm": "pm_canary_0123456789abcdef",
    "amount": 4242_4242,
}
PAYMENT_METHOD = {
    "id": CANARIES["pm"], "object": "payment_method", "type": "card",
    "card": {"brand": "visa", "last4": "4987", "exp_month": 12, "exp_year": 2031,
             "fingerprint": CANARIES["fingerprint"], "country": "US"},
    "billing_details": {"name": CANARIES["name"], "phone": CANARIES["phone"], "email": None,
                        "address": {"line1": CANARIES["line1"], "postal_code": CANARIES["postal_code"],
                                    "city": "Springfield", "country": "US"}},
}
ALLOWED_ACCOUNT_COLUMNS = {
    "id", "owner_id", "stripe_customer_id", "stripe_subscription_id", "stripe_price_id", "plan", "status",
    "current_period_end", "cancel_at_period_end", "state_as_of", "past_due_since", "updated_at",
}
ALLOWED_CLEANUP_COLUMNS = {
    "id", "stripe_customer_id", "stripe_subscription_id", "attempts", "last_error", "created_at", "done_at",
}


def _columns(table: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s", [table])
        return {row[0] for row in cursor.fetchall()}


def test_the_billing_tables_have_only_the_allowed_columns():
    assert _columns("billing_billingaccount") == ALLOWED_ACCOUNT_COLUMNS
    assert _columns("billing_stripecleanup") == ALLOWED_CLEANUP_COLUMNS


def _every_row_as_text(user) -> str:
    """Every row of every table in the main database the user's binding can see, as JSON text."""
    with owner_scope(user), connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [row[0] for row in cursor.fetchall()]
        dump = []
        for table in tables:
            cursor.execute(f'SELECT row_to_json(t)::text FROM "{table}" t')  # noqa: S608 - catalog names
            dump += [row[0] for row in cursor.fetchall()]
    return "\n".join(dump)


def _enrich(stripe_fake):
    """Make every subscription and invoice the local Stripe sends as rich as Stripe's own."""
    for subscription in stripe_fake.subscriptions.values():
        subscription["default_payment_method"] = PAYMENT_METHOD
        subscription["customer_details"] = {"name": CANARIES["name"], "phone": CANARIES["phone"]}
    for event in stripe_fake.events:
        obj = event["data"]["object"]
        if obj.get("object") in ("subscription", "checkout.session"):
            obj["default_payment_method"] = PAYMENT_METHOD
            obj["customer_details"] = {"name": CANARIES["name"], "address": PAYMENT_METHOD["billing_details"]
                                       ["address"], "phone": CANARIES["phone"]}
        if obj.get("object") == "invoice":
            obj.update(amount_paid=CANARIES["amount"], customer_name=CANARIES["name"],
                       customer_address=PAYMENT_METHOD["billing_details"]["address"],
                       customer_phone=CANARIES["phone"], payment_intent={"payment_method": PAYMENT_METHOD})


def test_a_full_history_full_of_card_data_leaves_none_of_it_with_us(stripe_fake, monkeypatch, caplog,
                                                                    django_capture_on_commit_callbacks):
    from aiemaily.celery import app as celery_app

    handed: list[str] = []
    monkeypatch.setattr(celery_app, "send_task", lambda name, args=None, **kw: handed.extend(args[0]))
    client = signed_in_client()
    client.post("/billing/checkout", {"plan": "pro"})
    (session_id,) = stripe_fake.sessions
    events = stripe_fake.complete_checkout(session_id)
    subscription_id = stripe_fake.sessions[session_id]["subscription"]
    stripe_fake.advance(5)
    events += stripe_fake.fail_payment(subscription_id)
    stripe_fake.advance(5)
    events += stripe_fake.pay(subscription_id)
    _enrich(stripe_fake)
    with caplog.at_level(logging.DEBUG):
        for event in events:
            payload, header = signed(next(e for e in stripe_fake.events if e["id"] == event["id"]), WEBHOOK_SECRET)
            with django_capture_on_commit_callbacks(execute=True):
                assert Client().post("/webhooks/stripe", payload, content_type="application/json",
                                     HTTP_STRIPE_SIGNATURE=header).status_code == 200
        assert handoff.flush()  # the route's relay publishes (batches of ledger ids)
        stripe_events_process.apply(args=[handed]).get()
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(api, client.user)["access"])
        shown = api.get("/api/v1/billing")
        page = client.get("/billing/").content.decode()
    stored = _every_row_as_text(client.user)
    assert f'"stripe_subscription_id":"{subscription_id}"' in stored  # the scan does see billing's row
    assert '"plan":"pro"' in stored and '"status":"active"' in stored
    logs = "\n".join(r.getMessage() for r in caplog.records)
    # Four digits could match any number by chance; the field's name cannot.
    for label, canary in [*CANARIES.items(), ("card", "last4"), ("card", "exp_year")]:
        for where, text in (("database", stored), ("logs", logs), ("API", shown.content.decode()), ("page", page)):
            assert str(canary) not in text, f"{label} reached our {where}"
    body = shown.json()
    assert set(body) == {"configured", "plan", "status", "current_period_end", "cancel_at_period_end", "limits"}
    assert (body["plan"], body["status"]) == ("pro", "active")


def test_what_we_send_to_stripe_is_the_owner_id_and_the_address_for_receipts(stripe_fake):
    client = signed_in_client()
    client.post("/billing/checkout", {"plan": "pro"})
    (customer,) = stripe_fake.customers.values()
    assert set(customer) - {"id", "object", "created", "livemode"} == {"email", "metadata"}
    assert customer["metadata"] == {"aiemaily_owner": str(client.user.pk)}
    (session,) = stripe_fake.sessions.values()
    assert session["subscription_metadata"] == {"aiemaily_owner": str(client.user.pk)}


def test_no_billing_page_has_a_field_for_card_data(stripe_fake):
    import re

    client = signed_in_client()
    client.post("/billing/checkout", {"plan": "pro"})
    for path in ("/billing/", "/billing/success?session_id=cs_test_1", "/billing/cancelled", "/pricing"):
        html = client.get(path).content.decode()
        fields = re.findall(r"<(?:input|select|textarea)\b[^>]*>", html)
        names = {re.search(r'name="([^"]+)"', f).group(1) for f in fields if 'name="' in f}
        assert names <= {"csrfmiddlewaretoken", "plan"}, (path, names)
        assert "js.stripe.com" not in html  # no Elements: no card field of ours, on any page
