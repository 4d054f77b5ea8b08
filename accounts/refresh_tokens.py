"""The hashed ledger of API refresh tokens: issue, rotate (single use), revoke.

Only SHA-256 digests are stored. A refresh token is a signed, high-entropy JWT, so a digest cannot
be turned back into a usable token, and a copy of the table (a backup, a read replica, a staff
query) signs nobody in. Each row is owned and under RLS; callers bind the owner first.
"""

import hashlib
from datetime import UTC, datetime

from django.utils import timezone

from accounts.models import RefreshTokenRecord


class RefreshReuse(Exception):
    """A refresh token that was already used or revoked came back."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def refresh_record(*, owner_id, token: str, expires_at: int) -> None:
    """Record a freshly issued refresh token (by digest); the owner must be bound."""
    RefreshTokenRecord.objects.create(
        owner_id=owner_id, token_hash=token_digest(token), expires_at=datetime.fromtimestamp(expires_at, UTC))


def refresh_consume(*, owner_id, token: str) -> bool:
    """Mark a live token used, once. False: not ours (or expired); RefreshReuse: presented again.

    The row lock serialises concurrent refreshes of one token: exactly one of them wins."""
    row = (RefreshTokenRecord.objects.for_owner(owner_id).select_for_update()
           .filter(token_hash=token_digest(token)).first())
    if row is None or row.expires_at <= timezone.now() or row.revoked_by_owner:
        # A token the owner revoked on the sessions page is simply dead: refusing it quietly keeps
        # the owner's other API clients signed in (reuse detection would end them all).
        return False
    if row.used_at is not None or row.revoked_at is not None:
        raise RefreshReuse
    row.used_at = timezone.now()
    row.save(update_fields=["used_at"])
    return True


def refresh_revoke_one(*, owner_id, record_id) -> bool:
    """The owner revokes one live refresh token (the sessions page). Idempotent: False when it was
    already used, revoked or never theirs."""
    return RefreshTokenRecord.objects.for_owner(owner_id).filter(
        pk=record_id, revoked_at__isnull=True, used_at__isnull=True).update(
        revoked_at=timezone.now(), revoked_by_owner=True) == 1


def refresh_revoke_all(*, owner_id) -> int:
    """Revoke every live refresh token of the owner (password change/reset, reuse, deletion)."""
    return RefreshTokenRecord.objects.for_owner(owner_id).filter(
        revoked_at__isnull=True, used_at__isnull=True).update(revoked_at=timezone.now())
