"""Inbound webhooks: body caps, failure throttling, Stripe signing secrets, Gmail and Graph push."""

from aiemaily.env import env_https_url, env_int, env_secret, env_str
from aiemaily.settings.security import SITE_URL

# --- inbound webhooks (aiemaily/webhooks, mail/webhooks; README "Webhooks") -------------------------
# Body caps per route: Stripe events are a few KB (a list-heavy one tens of KB); a Pub/Sub push is
# under 1 KB; a Graph batch holds up to ~100 items.
AIEMAILY_WEBHOOK_STRIPE_MAX_BYTES = env_int("AIEMAILY_WEBHOOK_STRIPE_MAX_BYTES", 256 * 1024)
AIEMAILY_WEBHOOK_GMAIL_MAX_BYTES = env_int("AIEMAILY_WEBHOOK_GMAIL_MAX_BYTES", 16 * 1024)
AIEMAILY_WEBHOOK_GRAPH_MAX_BYTES = env_int("AIEMAILY_WEBHOOK_GRAPH_MAX_BYTES", 512 * 1024)
# Rejected deliveries per client address and route per window before that address gets 429
# (genuine deliveries never fail, so they never count; aiemaily/webhooks/http.py explains).
AIEMAILY_WEBHOOK_FAILURE_LIMIT = env_int("AIEMAILY_WEBHOOK_FAILURE_LIMIT", 100)
AIEMAILY_WEBHOOK_FAILURE_WINDOW_SECONDS = env_int("AIEMAILY_WEBHOOK_FAILURE_WINDOW_SECONDS", 60)
# Accepted deliveries are handed to the workers in batches, published by a relay thread at most this
# many milliseconds after their ledger row committed (aiemaily/webhooks/handoff.py); 0 publishes one
# message per delivery on the request thread.
AIEMAILY_WEBHOOK_HANDOFF_MS = env_int("AIEMAILY_WEBHOOK_HANDOFF_MS", 25)
# Stripe endpoint signing secrets (whsec_…), comma-separated: list old and new while rolling one.
STRIPE_WEBHOOK_SECRETS = [item.strip() for item in (env_secret("STRIPE_WEBHOOK_SECRETS") or "").split(",")
                          if item.strip()]
STRIPE_WEBHOOK_TOLERANCE_SECONDS = env_int("STRIPE_WEBHOOK_TOLERANCE_SECONDS", 300)
# Gmail push (Cloud Pub/Sub, mail/webhooks/gmail.py): users.watch names the topic; the push
# subscription on it posts to AIEMAILY_GMAIL_PUSH_AUDIENCE (our /webhooks/gmail URL, also the
# token's audience) with an OIDC token for the service account below. Unset topic: no watches.
AIEMAILY_GMAIL_PUSH_TOPIC = env_str("AIEMAILY_GMAIL_PUSH_TOPIC", "")
AIEMAILY_GMAIL_PUSH_AUDIENCE = env_str("AIEMAILY_GMAIL_PUSH_AUDIENCE", f"{SITE_URL}/webhooks/gmail")
AIEMAILY_GMAIL_PUSH_SERVICE_ACCOUNT = env_str("AIEMAILY_GMAIL_PUSH_SERVICE_ACCOUNT", "")
AIEMAILY_GMAIL_PUSH_CLOCK_SKEW = env_int("AIEMAILY_GMAIL_PUSH_CLOCK_SKEW", 30)
# Google's token-signing certificates ({kid: PEM}), cached per process (aiemaily/webhooks/google_oidc.py).
AIEMAILY_GOOGLE_CERTS_URL = env_https_url("AIEMAILY_GOOGLE_CERTS_URL", "https://www.googleapis.com/oauth2/v1/certs")
# Microsoft Graph change notifications (mail/webhooks/graph.py): subscriptions post to this URL
# (also used for lifecycle notifications). Unset: no subscriptions, mailboxes are polled.
AIEMAILY_GRAPH_NOTIFICATION_URL = env_str("AIEMAILY_GRAPH_NOTIFICATION_URL", "")
# Requested subscription lifetime in minutes; Graph's cap for mail is 4,230 (just under 3 days).
AIEMAILY_GRAPH_SUBSCRIPTION_MINUTES = min(env_int("AIEMAILY_GRAPH_SUBSCRIPTION_MINUTES", 4200), 4230)
