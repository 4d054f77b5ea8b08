"""The port through which vault-side OAuth reads and records the mailbox a grant belongs to.

The grant (code, refresh token, access leases) is the vault's; the connection row it serves and
the sign-in attempt are the mail app's. Rather than import `mail` (a cycle: mail queues the
vault's tasks), the vault states here what it needs, and the mail app registers an implementation
when it loads (mail/apps.py). The calls run inside the vault's owner-bound transactions, so the
row lock taken by `lock` holds for the whole exchange or refresh.
"""

from typing import Any, Protocol


class Status:
    """The connection states the vault reads and writes (mail.models.Connection.Status values)."""

    PENDING = "pending"
    ACTIVE = "active"
    NEEDS_REAUTH = "needs_reauth"
    ERROR = "error"
    DISCONNECTED = "disconnected"


class GrantHolder(Protocol):
    def lock(self, owner_id, connection_id) -> Any | None:
        """The connection row, locked FOR UPDATE in the current transaction (None if gone). It has
        `pk`, `provider`, `status`, `email`, `oauth_secret_id` and `granted_scopes`."""

    def save(self, connection, **fields) -> None:
        """Write these fields of the connection (and its `updated_at`)."""

    def finished_attempt(self, owner_id, *, attempt_id, connection_id) -> Any | None:
        """The sign-in attempt of this connection, with `used_at`, `sealed_verifier` and
        `requested_scopes` (None if there is none)."""

    def attempt_spent(self, owner_id, *, attempt_id) -> None:
        """Forget the attempt's sealed PKCE verifier: its code has been redeemed or refused."""

    def activated(self, owner_id, *, connection_id) -> None:
        """A connection allowed to read mail has just become active: queue its first sync and push
        channel (ids only, on commit)."""


_holder: GrantHolder | None = None


def register(holder: GrantHolder) -> None:
    global _holder
    _holder = holder


def get() -> GrantHolder:
    if _holder is None:
        raise RuntimeError("no OAuth grant holder registered (is the mail app installed?)")
    return _holder
