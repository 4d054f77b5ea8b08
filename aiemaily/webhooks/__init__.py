"""The inbound-webhook ledger every provider shares (Stripe, Gmail push, Microsoft Graph).

One row per delivery, with who sent it, what we decided and when; never the payload, never a
secret. The unique insert of an accepted delivery *is* the replay check. The HTTP side every
webhook route shares (size and content-type limits, the failure-keyed rate limit, the answers)
is aiemaily/webhooks/http.py; Stripe's route is aiemaily/webhooks/stripe.py, Gmail's and Graph's
live with the mail app in mail/webhooks/. docs/security-model.md, "Inbound webhooks", explains it.
"""
