"""The three PostgreSQL roles of DESIGN.md and the grants that tie them to the tables.

  owning role   runs migrations and owns the tables (FORCE ROW LEVEL SECURITY applies to it too)
  app role      web and workers: LOGIN, NOSUPERUSER, NOBYPASSRLS, owns nothing
  maintenance   BYPASSRLS, used only through the `maintenance` alias by admin and system jobs
"""

from django.conf import settings
from django.db import connections
from psycopg import sql


def ensure_roles(cursor, *, owner_role: str, app_role: str, maintenance_role: str, password: str | None,
                 maintenance_password: str | None = None):
    """Create or correct the app and maintenance roles; run as a role with CREATEROLE.

    The two roles log in with different passwords: the app role's is in every process, the
    maintenance role's only in worker-maintenance and the admin process, so knowing one (a web
    process's environment) never yields the other."""
    for role, bypass, secret in ((app_role, False, password), (maintenance_role, True, maintenance_password)):
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
        verb = "ALTER" if cursor.fetchone() else "CREATE"
        attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT " + (
            "BYPASSRLS" if bypass else "NOBYPASSRLS"
        )
        statement = sql.SQL(verb + " ROLE {} " + attributes).format(sql.Identifier(role))
        if secret:
            statement = statement + sql.SQL(" PASSWORD {}").format(sql.Literal(secret))
        cursor.execute(statement)
    for role in (app_role, maintenance_role):
        cursor.execute(
            sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public "
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {}").format(
                sql.Identifier(owner_role), sql.Identifier(role)
            )
        )
        cursor.execute(
            sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA public "
                    "GRANT USAGE, SELECT ON SEQUENCES TO {}").format(
                sql.Identifier(owner_role), sql.Identifier(role)
            )
        )


def grant_table_privileges(sender=None, using="default", **kwargs):
    """After migrate: make sure the app and maintenance roles can use every table (idempotent)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for role in (settings.AIEMAILY_DB_APP_ROLE, settings.AIEMAILY_DB_MAINTENANCE_ROLE):
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
            if not cursor.fetchone():
                continue
            cursor.execute(
                sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(role))
            )
            cursor.execute(
                sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(
                    sql.Identifier(role)
                )
            )
            cursor.execute(
                sql.SQL("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(
                    sql.Identifier(role)
                )
            )
