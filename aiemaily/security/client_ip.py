"""The client's address as our nginx saw it: for throttles, the webhook ledger and CSP reports.

Lives in the shared security package (not in accounts) so the project's own modules can use it
without depending on the accounts app.
"""

from django.conf import settings


def client_ip(request) -> str:
    if getattr(settings, "SECURE_PROXY_SSL_HEADER", None):
        # Behind our nginx, which appends the address it saw as the last X-Forwarded-For entry.
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            return forwarded.split(",")[-1].strip()
    return request.META.get("REMOTE_ADDR", "")
