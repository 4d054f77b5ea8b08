"""Fixtures for the billing tests: the local Stripe API (tests/harness/stripe_api_server.py) with the real
stripe-python pointed at it, and signed-in page clients. Import the fixtures by name."""

import pytest
from django.test import Client

from tests.harness.factories import UserFactory
from tests.harness.stripe_api_server import FakeStripe

PRICE_PRO = "price_pro_test_0001"
WEBHOOK_SECRET = "whsec_test_billing_0123456789abcdef"


@pytest.fixture(scope="session")
def stripe_server(test_ca):
    server = FakeStripe(test_ca)
    yield server
    server.stop()


@pytest.fixture
def stripe_fake(stripe_server, settings, test_ca):
    """Billing configured against the local Stripe; every call must have carried our idempotency key."""
    stripe_server.reset()
    settings.STRIPE_SECRET_KEY = stripe_server.token
    settings.STRIPE_PRICE_PRO = PRICE_PRO
    settings.STRIPE_API_BASE = stripe_server.origin
    settings.STRIPE_HOSTED_ORIGINS = [stripe_server.origin]
    settings.STRIPE_WEBHOOK_SECRETS = [WEBHOOK_SECRET]
    settings.AIEMAILY_STRIPE_CA_BUNDLE = str(test_ca.ca_file)
    yield stripe_server
    assert stripe_server.violations == [], stripe_server.violations


def signed_in_client(user=None) -> Client:
    user = user or UserFactory()
    client = Client()
    client.force_login(user)
    client.user = user
    return client
