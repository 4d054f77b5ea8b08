"""Owner scoping, both layers: the scoped manager refuses unscoped queries, and PostgreSQL RLS
limits even a query that bypasses the manager to the bound owner's rows."""

import logging

import pytest
from django.db import ProgrammingError, connection, connections, transaction
from rest_framework.test import APIClient

from aiemaily.ownership.binding import bind_owner, bound_owner_id, owner_scope
from aiemaily.ownership.models import UnscopedQueryError
from aiemaily.ownership.tasks import owner_task
from secrets_vault.models import AuditEvent
from tests.conftest import issue_tokens
from tests.harness.factories import UserFactory, audit_event

pytestmark = pytest.mark.claim("owner-scoping")


@pytest.fixture
def two_owners(db):
    alice, bob = UserFactory(), UserFactory()
    for _ in range(3):
        audit_event(alice, detail="alice")
    for _ in range(2):
        audit_event(bob, detail="bob")
    return alice, bob


# --- layer one: the manager --------------------------------------------------------------------

@pytest.mark.parametrize(
    "query",
    [
        lambda: list(AuditEvent.objects.all()),
        lambda: AuditEvent.objects.count(),
        lambda: AuditEvent.objects.exists(),
        lambda: AuditEvent.objects.first(),
        lambda: AuditEvent.objects.get(detail="x"),
        lambda: AuditEvent.objects.filter(detail="bob").update(detail="x"),
        lambda: AuditEvent.objects.filter(detail="bob").delete(),
        lambda: list(AuditEvent.objects.iterator()),
        lambda: AuditEvent.objects.values("id")[0],
        lambda: AuditEvent.objects.in_bulk(),
    ],
    ids=["list", "count", "exists", "first", "get", "update", "delete", "iterator", "values", "in_bulk"],
)
def test_the_manager_refuses_every_unscoped_query(two_owners, query):
    with pytest.raises(UnscopedQueryError, match="for_owner"):
        query()


def test_for_owner_returns_only_that_owners_rows(two_owners):
    alice, bob = two_owners
    with owner_scope(alice):
        assert {e.detail for e in AuditEvent.objects.for_owner(alice)} == {"alice"}
        assert AuditEvent.objects.for_owner(alice).count() == 3


def test_for_owner_refuses_none(db):
    with pytest.raises(UnscopedQueryError):
        AuditEvent.objects.for_owner(None)


def test_unscoped_needs_a_reason(db):
    with pytest.raises(ValueError, match="reason"):
        AuditEvent.objects.unscoped(reason=" ")


@pytest.mark.django_db(transaction=True, databases=["default", "maintenance"])
def test_unscoped_runs_on_the_maintenance_role_and_is_audited(caplog):
    alice, bob = UserFactory(), UserFactory()
    audit_event(alice)
    audit_event(bob)
    with caplog.at_level(logging.WARNING, logger="aiemaily.audit.unscoped"):
        rows = list(AuditEvent.objects.unscoped(reason="nightly retention job"))
    assert {r.owner_id for r in rows} >= {alice.pk, bob.pk}
    assert any("nightly retention job" in r.getMessage() for r in caplog.records)


# --- layer two: row-level security --------------------------------------------------------------

def test_a_query_that_bypasses_the_manager_still_sees_only_the_bound_owner(two_owners):
    alice, bob = two_owners
    with owner_scope(alice):
        rows = list(AuditEvent._base_manager.all())  # deliberately unscoped ORM query
        assert rows and {r.owner_id for r in rows} == {alice.pk}
    with owner_scope(bob):
        assert {r.owner_id for r in AuditEvent._base_manager.all()} == {bob.pk}


def test_raw_sql_sees_only_the_bound_owner(two_owners):
    alice, _ = two_owners
    with owner_scope(alice), connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT owner_id FROM secrets_vault_auditevent")
        assert [row[0] for row in cursor.fetchall()] == [alice.pk]


def test_nothing_is_visible_without_an_owner(two_owners):
    with transaction.atomic():
        bind_owner(None)
        assert AuditEvent._base_manager.count() == 0
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM secrets_vault_auditevent")
            assert cursor.fetchone()[0] == 0


def test_inserting_a_row_for_another_owner_fails(two_owners):
    alice, bob = two_owners
    with pytest.raises(ProgrammingError, match="row-level security"), owner_scope(alice):
        AuditEvent.objects.create(owner=bob, action="decrypt", process="vault")
    with owner_scope(bob):
        assert AuditEvent.objects.for_owner(bob).count() == 2


def test_writing_without_an_owner_fails(db):
    alice = UserFactory()
    with pytest.raises(ProgrammingError, match="row-level security"), transaction.atomic():
        bind_owner(None)
        AuditEvent.objects.create(owner=alice, action="decrypt", process="vault")


def test_moving_a_row_to_another_owner_fails(two_owners):
    alice, bob = two_owners
    with pytest.raises(ProgrammingError, match="row-level security"), owner_scope(alice):
        AuditEvent._base_manager.filter(owner=alice).update(owner=bob)


def test_updates_and_deletes_cannot_touch_other_owners_rows(two_owners):
    alice, bob = two_owners
    with owner_scope(alice):
        assert AuditEvent._base_manager.filter(owner=bob).update(detail="hijacked") == 0
        assert AuditEvent._base_manager.filter(owner=bob).delete()[0] == 0
    with owner_scope(bob):
        assert {e.detail for e in AuditEvent.objects.for_owner(bob)} == {"bob"}


@pytest.mark.django_db(transaction=True)
def test_binding_needs_a_transaction():
    # Outside a transaction a "local" setting would vanish after one statement: refuse instead.
    user = UserFactory()
    assert not connections["default"].in_atomic_block
    with pytest.raises(RuntimeError, match="transaction"):
        bind_owner(user)


def test_owner_scope_restores_the_previous_binding(two_owners):
    alice, bob = two_owners
    with owner_scope(alice):
        with owner_scope(bob):
            assert bound_owner_id() == str(bob.pk)
        assert bound_owner_id() == str(alice.pk)


# --- tasks --------------------------------------------------------------------------------------

@owner_task
def _visible_owner_ids(owner_id):
    # Deliberately unscoped: only RLS stands between this task and other owners' rows.
    return {e.owner_id for e in AuditEvent._base_manager.all()}


@pytest.mark.django_db(transaction=True)
def test_a_task_for_a_never_sees_b_even_right_after_a_task_for_b():
    alice, bob = UserFactory(), UserFactory()
    audit_event(alice)
    audit_event(bob)
    assert _visible_owner_ids(str(bob.pk)) == {bob.pk}
    assert _visible_owner_ids(str(alice.pk)) == {alice.pk}
    assert _visible_owner_ids(str(bob.pk)) == {bob.pk}
    # Nothing lingers on the connection after a task.
    with transaction.atomic():
        assert bound_owner_id() is None
        assert AuditEvent._base_manager.count() == 0


def test_a_task_without_owner_id_is_refused(db):
    with pytest.raises(ValueError, match="owner id"):
        _visible_owner_ids("")


# --- requests -----------------------------------------------------------------------------------

def test_an_api_request_is_bound_to_the_token_owner(two_owners):
    alice, bob = two_owners
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(client, alice)["access"])
    response = client.get("/api/v1/audit")
    assert response.status_code == 200
    assert {e["detail"] for e in response.json()["results"]} == {"alice"}


def test_a_session_request_is_bound_to_the_signed_in_user(two_owners, client):
    alice, bob = two_owners
    client.force_login(bob)
    page = client.get("/settings/audit/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "bob" in html and "alice" not in html


def test_an_anonymous_request_is_bound_to_nobody(two_owners, client):
    assert client.get("/settings/audit/").status_code == 302
    assert APIClient().get("/api/v1/audit").status_code == 401

