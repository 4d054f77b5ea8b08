"""The lean path for webhook routes: the security headers, then straight to the view.

A webhook is a provider's server calling ours, with nobody signed in and no browser involved. The
middleware below the security headers exists for browsers and users (static files, CORS, the CSP
nonce, the session, CSRF, the user, the second factor, messages, the owner binding and the session
ledger): every one of them either does nothing for a webhook or, worse, costs a database round trip
(binding nobody as owner at the start and end of the transaction). Measured in benchmarks/
bench_webhooks.py, skipping them is most of a delivery's cost.

What a webhook route still gets, here or above:
- SecurityMiddleware and SecurityHeadersMiddleware (above this one): HSTS, nosniff, referrer and
  opener policies, the HTTPS redirect, Permissions-Policy, CORP, X-Frame-Options and a deny-all
  CSP (an empty answer runs nothing, so the deny-all policy is the right one);
- the Host check (ALLOWED_HOSTS), which CommonMiddleware would otherwise make: a bad Host is a 400;
- its view's own decorations (webhook_endpoint: POST only, CSRF-exempt, never cached);
- one transaction around the view on PostgreSQL, as OwnerScopeMiddleware gives every request, so a
  delivery's ledger row and its follow-up writes commit together and its hand-off is published
  only on commit; a 5xx answer rolls it back. No owner is bound: the ledger and registry are system
  tables, and an unbound transaction sees no owned row at all (the same as binding nobody).
  A view marked `webhook_endpoint(atomic=False)` runs in autocommit, two round trips fewer: Stripe's
  (every outcome is one INSERT, and its hand-off follows that INSERT's commit either way), Gmail's
  (an accepted push's lookup, ledger row and cursor move are one statement on PostgreSQL, and a
  transaction of their own elsewhere) and Graph's (which opens its own transaction for a batch of
  more than one item).
- no CORS headers: CORS_URLS_REGEX never matches /webhooks/, and this path adds none.

Only views marked by `webhook_endpoint` take this path, found by the normal URL resolver; any other
path under the prefix (a 404, a future non-webhook page) goes through the full stack.
"""

from django.db import connections, transaction
from django.urls import Resolver404, get_resolver

PREFIX = "/webhooks/"


class WebhookFastPathMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path_info.startswith(PREFIX):
            return self.get_response(request)
        try:
            match = get_resolver().resolve(request.path_info)
        except Resolver404:
            return self.get_response(request)
        if not getattr(match.func, "webhook_endpoint", False):
            return self.get_response(request)
        request.get_host()  # ALLOWED_HOSTS, as CommonMiddleware checks it: DisallowedHost is a 400
        request.resolver_match = match
        if connections["default"].vendor != "postgresql" or not getattr(match.func, "webhook_atomic", True):
            return match.func(request, *match.args, **match.kwargs)
        with transaction.atomic():
            response = match.func(request, *match.args, **match.kwargs)
            if response.status_code >= 500:
                transaction.set_rollback(True)
            return response
