"""SessionLedgerMiddleware: a browser whose session the owner ended (the sessions page, "sign out
everywhere else", a password change) is signed out on its very next request.

It sits after OwnerScopeMiddleware, inside the request's transaction with the owner bound, so the
ledger row is read under row-level security like every owned row.
"""

from django.contrib.auth import logout

from accounts.services import browser_session_check
from aiemaily.ownership.binding import bind_owner


class SessionLedgerMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and hasattr(request, "session"):
            if not browser_session_check(request=request):
                # Flushes the session (its row in Django's session store is deleted) and makes the
                # request anonymous: a page that needs sign-in now sends the browser to the login.
                logout(request)
                bind_owner(None)  # the transaction no longer belongs to that owner either
        return self.get_response(request)
