"""Sign-in and sign-out open and close the browser-session ledger row (services do the writing)."""

from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.dispatch import receiver

from accounts.browser_sessions import SESSION_ROW_KEY
from accounts.services import browser_session_end, browser_session_open


@receiver(user_logged_in, dispatch_uid="accounts.browser_session_opened")
def browser_session_opened(sender, request, user, **kwargs):
    if request is not None and hasattr(request, "session"):
        browser_session_open(request=request, user=user)


@receiver(user_logged_out, dispatch_uid="accounts.browser_session_closed")
def browser_session_closed(sender, request, user, **kwargs):
    if request is None or user is None or not hasattr(request, "session"):
        return
    row_id = request.session.get(SESSION_ROW_KEY)
    if row_id:
        browser_session_end(owner=user, session_id=row_id)
