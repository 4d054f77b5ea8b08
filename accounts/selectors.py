"""Reads of the accounts app: what the sessions page lists."""

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from accounts.models import BrowserSession, RefreshTokenRecord


def browser_session_list(*, owner) -> list[BrowserSession]:
    """The owner's live browser sessions, most recently seen first. A row not seen for longer than a
    session can live (SESSION_COOKIE_AGE) is over even if nobody ended it."""
    oldest = timezone.now() - timedelta(seconds=settings.SESSION_COOKIE_AGE)
    return list(BrowserSession.objects.for_owner(owner).filter(ended_at__isnull=True, last_seen_at__gt=oldest)
                .order_by("-last_seen_at"))


def refresh_token_list(*, owner) -> list[RefreshTokenRecord]:
    """The owner's usable API refresh tokens (each is the current link of one signed-in API client's
    chain: a refresh replaces it with a new row), newest first."""
    return list(RefreshTokenRecord.objects.for_owner(owner).filter(
        used_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()).order_by("-created_at"))


def browser_session_get(*, owner, session_id) -> BrowserSession | None:
    return BrowserSession.objects.for_owner(owner).filter(pk=session_id).first()


def refresh_token_get(*, owner, record_id) -> RefreshTokenRecord | None:
    return RefreshTokenRecord.objects.for_owner(owner).filter(pk=record_id).first()
