"""Billing: Stripe-hosted Checkout and Customer Portal, plan limits."""

from aiemaily.env import env_https_url, env_int, env_list, env_secret, env_str
from aiemaily.settings.celery import CELERY_BEAT_SCHEDULE, CELERY_TASK_ROUTES
from aiemaily.settings.security import https_origins
from aiemaily.settings.zones_and_keys import plays

# --- billing (billing/): Stripe-hosted Checkout and Customer Portal ---------------------------------
# Unset STRIPE_SECRET_KEY or STRIPE_PRICE_PRO: billing is "not configured", everyone is on Free and no
# plan limit applies (a self-hosted install); the billing page says so. Only Stripe ids and the
# subscription status are stored; card data never reaches us.
# The key only where Stripe is called: web (Checkout, Portal) and worker-sync (events, closures).
# worker-ai decides the platform-AI limit from STRIPE_PRICE_PRO and the stored status alone.
STRIPE_SECRET_KEY = env_secret("STRIPE_SECRET_KEY") if plays & {"web", "sync"} else None
STRIPE_PRICE_PRO = env_str("STRIPE_PRICE_PRO")
STRIPE_API_BASE = env_https_url("STRIPE_API_BASE", "https://api.stripe.com").rstrip("/")
# Extra CA certificates trusted for the Stripe API (the test harness's CA); None: the system's.
AIEMAILY_STRIPE_CA_BUNDLE = env_str("AIEMAILY_STRIPE_CA_BUNDLE")
# The Stripe-hosted pages our billing forms redirect to: the billing pages' CSP form-action admits
# exactly these (browsers apply form-action to the redirect after a form post).
STRIPE_HOSTED_ORIGINS = https_origins("STRIPE_HOSTED_ORIGINS", env_list(
    "STRIPE_HOSTED_ORIGINS", ["https://checkout.stripe.com", "https://billing.stripe.com"]))
AIEMAILY_BILLING_FREE_MAILBOXES = env_int("AIEMAILY_BILLING_FREE_MAILBOXES", 1)
AIEMAILY_BILLING_PRO_MAILBOXES = env_int("AIEMAILY_BILLING_PRO_MAILBOXES", 10)
# A past_due subscription keeps Pro access this long after the first failed payment.
AIEMAILY_BILLING_GRACE_DAYS = env_int("AIEMAILY_BILLING_GRACE_DAYS", 7)
# What the pricing page says Pro costs (display text only; Stripe's price is what is charged).
AIEMAILY_BILLING_PRO_PRICE_LABEL = env_str("AIEMAILY_BILLING_PRO_PRICE_LABEL", "Billed monthly through Stripe")
CELERY_TASK_ROUTES["billing.tasks.*"] = {"queue": "sync"}  # Stripe API calls; no mail credentials needed
CELERY_BEAT_SCHEDULE["billing-stripe-cleanup-retry"] = {
    # Account deletion closes the Stripe customer; a closure Stripe did not answer is retried here.
    "task": "billing.tasks.stripe_cleanup_retry", "schedule": 900.0}
CELERY_BEAT_SCHEDULE["billing-stripe-event-sweep"] = {
    # A Stripe delivery whose processing task was lost (retries exhausted, broker outage) is handed over again.
    "task": "billing.tasks.stripe_event_sweep", "schedule": 600.0}
