"""Deleting an account that other owners' rows point at (a delegate of a grant, even a revoked one).

The purge runs under the deleted user's own RLS binding, so it cannot see (let alone delete) rows
owned by someone else; Django's in-Python cascade therefore misses them and PostgreSQL rejected
the DELETE at COMMIT. Every such reference must be resolved by the database itself (ON DELETE
CASCADE / SET NULL run by the referential-integrity trigger, which RLS does not filter).
"""

import pytest
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from accounts.tasks import account_purge
from aiemaily.ownership.binding import owner_scope
from mail.models import Connection, Delegation
from tests.harness.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "vault"])


def _rls_tables() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname FROM pg_class WHERE relkind = 'r' AND relrowsecurity")
        return {row[0] for row in cursor.fetchall()}


def _references_to_users():
    """(model, field) for every foreign key to the user model, found by walking all models."""
    user_model = get_user_model()
    for model in apps.get_models(include_auto_created=True):
        for field in model._meta.concrete_fields:
            if field.is_relation and field.remote_field and field.remote_field.model is user_model:
                yield model, field


def _on_delete_action(table: str, column: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT c.confdeltype FROM pg_constraint c
               JOIN pg_class t ON t.oid = c.conrelid
               JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
               WHERE c.contype = 'f' AND t.relname = %s AND a.attname = %s""",
            [table, column])
        rows = [row[0] for row in cursor.fetchall()]
    assert len(rows) == 1, (table, column, rows)
    return rows[0]


def test_every_cross_owner_reference_to_a_user_is_resolved_by_the_database():
    """A reference from an RLS table that is not the row's own owner (someone else's row may point
    at the user) must be ON DELETE CASCADE or SET NULL in PostgreSQL itself. A new such foreign key
    added without that fails here."""
    rls = _rls_tables()
    found = []
    for model, field in _references_to_users():
        table = model._meta.db_table
        if table not in rls or field.name == "owner":
            continue  # owner: the user's own rows, visible to the purge under their binding
        found.append(f"{table}.{field.column}")
        assert _on_delete_action(table, field.column) in ("c", "n"), (
            f"{table}.{field.column} points at users from other owners' rows but the database does not "
            "cascade or null it: deleting such a user fails at COMMIT under RLS")
    assert "mail_delegation.delegate_id" in found  # the walk itself works


def _grant(owner, delegate, *, revoked: bool):
    with owner_scope(owner):
        conn = Connection.objects.create(owner=owner, provider="imap", status="active")
        return Delegation.objects.create(owner=owner, delegate=delegate, connection=conn, thread_id="<t@x>",
                                         revoked_at=timezone.now() if revoked else None)


@pytest.mark.claim("crypto-shredding")
@pytest.mark.parametrize("revoked", [False, True], ids=["live-grant", "revoked-grant"])
def test_deleting_a_delegate_purges_and_the_address_can_sign_up_again(client, revoked):
    owner, delegate = UserFactory(), UserFactory()
    grant = _grant(owner, delegate, revoked=revoked)
    email = delegate.email
    delegate.is_active = False
    delegate.save(update_fields=["is_active"])

    result = account_purge(str(delegate.pk))

    assert result["deleted_rows"] >= 1
    assert not get_user_model().objects.filter(pk=delegate.pk).exists()
    with owner_scope(owner):
        # The owner's grant to an account that no longer exists is gone; the owner's own data stays.
        assert not Delegation.objects.for_owner(owner).filter(pk=grant.pk).exists()
        assert Connection.objects.for_owner(owner).count() == 1
    response = client.post("/accounts/signup/", {"email": email, "password1": DEFAULT_PASSWORD + "!x",
                                                 "password2": DEFAULT_PASSWORD + "!x"})
    assert response.status_code == 302, response.content[:500]
    assert get_user_model().objects.filter(email__iexact=email, is_active=True).exists()


def test_deleting_the_owner_of_a_grant_still_removes_it():
    owner, delegate = UserFactory(), UserFactory()
    grant = _grant(owner, delegate, revoked=False)
    owner.is_active = False
    owner.save(update_fields=["is_active"])
    account_purge(str(owner.pk))
    with owner_scope(delegate):
        # RLS shows a delegate the grants made to them (delegate_sees_own_grants): none is left.
        assert not Delegation._base_manager.filter(pk=grant.pk).exists()
    assert not get_user_model().objects.filter(pk=owner.pk).exists()
    assert get_user_model().objects.filter(pk=delegate.pk).exists()
