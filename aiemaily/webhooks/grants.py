"""EXECUTE on the webhook statement functions (migration 0002) for the app role, after migrate.

PUBLIC may run a new function by default, but a server hardened with `REVOKE EXECUTE … FROM PUBLIC`
(or default privileges that do so) must still let the web tier run these two. Granted by exact
signature to the app role only: the web routes are their only callers, and a schema-wide grant would
also hand the app role functions an operator took away from PUBLIC on purpose (and fails outright
on a function the migrating role has no rights on). Both are SECURITY INVOKER, so EXECUTE lets the
app role run the statements inside with the rights it already has, nothing more.
"""

from django.conf import settings
from django.db import connections
from psycopg import sql

STATEMENT_FUNCTIONS = (
    "webhooks_push_record(text, text, uuid, text, text, text, timestamptz, bigint)",
    "webhooks_accept_if_current(uuid, text, text, text, text, timestamptz, uuid, uuid, uuid, text, timestamptz)",
)


def grant_execute(cursor, role: str) -> list[str]:
    """GRANT EXECUTE on each statement function that exists here to `role`; the signatures granted."""
    granted = []
    for signature in STATEMENT_FUNCTIONS:
        cursor.execute("SELECT to_regprocedure(%s) IS NOT NULL", [signature])
        if not cursor.fetchone()[0]:
            continue  # a database without them (vault, keys) or not migrated this far
        cursor.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(signature), sql.Identifier(role)))
        granted.append(signature)
    return granted


def grant_function_privileges(sender=None, using="default", **kwargs):
    """post_migrate: the grant above, as the role that ran the migrations (it owns the functions)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    role = settings.AIEMAILY_DB_APP_ROLE
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        if cursor.fetchone():
            grant_execute(cursor, role)
