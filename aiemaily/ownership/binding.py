"""Binding the current owner to the database transaction (`app.owner_id`), which RLS policies read.

Only transaction-local settings are used (`set_config(..., true)`), so a pooled connection can
never carry one request's owner into the next.
"""

import logging
from contextlib import contextmanager
from uuid import UUID

from django.db import connections, transaction

logger = logging.getLogger(__name__)

SETTING = "app.owner_id"


def _owner_text(owner) -> str:
    if owner is None:
        return ""
    owner_id = getattr(owner, "pk", owner)
    return str(UUID(str(owner_id)))


def bind_owner(owner, using: str = "default") -> None:
    """Bind `owner` (a user, a UUID or None) for the rest of the current transaction."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return  # The embedded SQLite default has no RLS; the scoped managers still apply.
    if not connection.in_atomic_block:
        raise RuntimeError("bind_owner() needs a transaction: use owner_scope() or transaction.atomic()")
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, %s, true)", [SETTING, _owner_text(owner)])


def bound_owner_id(using: str = "default") -> str | None:
    connection = connections[using]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT NULLIF(current_setting(%s, true), '')", [SETTING])
        return cursor.fetchone()[0]


@contextmanager
def owner_scope(owner, using: str = "default"):
    """Run the block in a transaction bound to `owner`; restore the previous binding afterwards.

    Restoring matters when owner_scope is nested inside an outer transaction (a test, or a
    request that runs a service for another owner): a released savepoint keeps its settings.
    """
    with transaction.atomic(using=using):
        previous = bound_owner_id(using)
        bind_owner(owner, using)
        try:
            yield
        finally:
            if connections[using].vendor == "postgresql" and not connections[using].needs_rollback:
                bind_owner(previous, using)
