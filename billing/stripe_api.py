"""The one place that builds a Stripe client: the configured key, API base and CA bundle.

Every call our code makes passes an idempotency key of ours (`aiemaily-…`, derived from what the
call is for), so a retry — by stripe-python itself, by Celery, or by a user pressing twice — can
never create a second customer or session at Stripe.
"""

import hashlib

import stripe
from django.conf import settings

from billing.plans import billing_configured

_DEFAULT_CA_BUNDLE = stripe.ca_bundle_path


class BillingNotConfigured(RuntimeError):
    """STRIPE_SECRET_KEY / STRIPE_PRICE_PRO are not set: there is no Stripe to talk to."""


def client() -> stripe.StripeClient:
    if not billing_configured():
        raise BillingNotConfigured("billing is not configured")
    # stripe-python reads its CA bundle from a module global only; it is the same for every call here.
    stripe.ca_bundle_path = settings.AIEMAILY_STRIPE_CA_BUNDLE or _DEFAULT_CA_BUNDLE
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": settings.STRIPE_API_BASE},
        max_network_retries=2,  # safe: every call carries an idempotency key
    )


def idempotency_key(purpose: str, *parts) -> str:
    """A stable key for one logical operation: the same purpose and parts give the same key."""
    digest = hashlib.sha256("\x1f".join([purpose, *map(str, parts)]).encode()).hexdigest()[:40]
    return f"aiemaily-{purpose}-{digest}"


def options(purpose: str, *parts) -> dict:
    return {"idempotency_key": idempotency_key(purpose, *parts)}
