"""The database catalog proves RLS covers every owned table and the app role cannot bypass it."""

import pytest
from django.conf import settings
from django.db import connection

pytestmark = [pytest.mark.django_db, pytest.mark.claim("owner-scoping")]


def _owned_tables():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner) "
            "FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE a.attname = 'owner_id' AND c.relkind = 'r' AND n.nspname = 'public' AND NOT a.attisdropped"
        )
        return cursor.fetchall()


def test_there_are_owned_tables():
    assert any(name == "secrets_vault_auditevent" for name, *_ in _owned_tables())


def test_every_owned_table_has_rls_enabled_and_forced_with_the_owner_policy():
    with connection.cursor() as cursor:
        for table, enabled, forced, owner in _owned_tables():
            assert enabled and forced, table
            assert owner != settings.AIEMAILY_DB_APP_ROLE, f"the app role owns {table}"
            cursor.execute("SELECT policyname, qual, with_check, cmd, permissive FROM pg_policies "
                           "WHERE tablename = %s", [table])
            policies = {name: rest for name, *rest in cursor.fetchall()}
            qual, with_check, cmd, permissive = policies.pop("owner_isolation")
            assert cmd == "ALL" and permissive == "PERMISSIVE", table
            for expression in (qual, with_check):
                assert "owner_id" in expression and "app.owner_id" in expression and "NULLIF" in expression
            # Any other policy may only widen READS, for a delegate, under a live grant.
            for name, (qual, with_check, cmd, _) in policies.items():
                assert name.startswith("delegate_"), (table, name)
                assert cmd == "SELECT" and with_check is None, (table, name)
                assert "delegate_id" in qual and "app.owner_id" in qual, (table, name)
                assert table == "mail_delegation" or "revoked_at IS NULL" in qual, (table, name)


def test_the_app_role_is_neither_superuser_nor_bypassrls():
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        assert cursor.fetchone()[0] == settings.AIEMAILY_DB_APP_ROLE
        cursor.execute("SELECT rolsuper, rolbypassrls, rolcreaterole FROM pg_roles WHERE rolname = current_user")
        assert cursor.fetchone() == (False, False, False)


def test_the_app_role_cannot_switch_rls_off():
    with connection.cursor() as cursor:
        for statement in (
            "ALTER TABLE secrets_vault_auditevent DISABLE ROW LEVEL SECURITY",
            "ALTER TABLE secrets_vault_auditevent NO FORCE ROW LEVEL SECURITY",
            "DROP POLICY owner_isolation ON secrets_vault_auditevent",
            "SET row_security = off; SELECT count(*) FROM secrets_vault_auditevent",
        ):
            cursor.execute("SAVEPOINT probe")
            with pytest.raises(Exception, match="owner|permission|row-level|policy"):
                cursor.execute(statement)
            cursor.execute("ROLLBACK TO SAVEPOINT probe")


def test_raw_sql_as_the_app_role_without_an_owner_returns_nothing():
    from tests.harness.factories import UserFactory, audit_event

    audit_event(UserFactory())
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('app.owner_id', '', true)")
        cursor.execute("SELECT count(*) FROM secrets_vault_auditevent")
        assert cursor.fetchone()[0] == 0
