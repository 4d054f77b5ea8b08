"""GET /api/v1/audit and /api/v1/audit/{id}: the owner's events only; strangers get 404."""

import pytest

from aiemaily.ownership.binding import owner_scope
from secrets_vault.models import AuditEvent
from tests.harness.cross_owner import assert_cross_owner_404
from tests.harness.factories import audit_event

pytestmark = [pytest.mark.django_db, pytest.mark.sqlite_smoke]


def test_lists_own_events_newest_first_with_cursor_pagination(auth_client):
    for n in range(5):
        audit_event(auth_client.user, detail=f"event {n}")
    first = auth_client.get("/api/v1/audit?limit=3")
    assert first.status_code == 200
    page = first.json()
    assert [e["detail"] for e in page["results"]] == ["event 4", "event 3", "event 2"]
    second = auth_client.get(page["next"])
    assert [e["detail"] for e in second.json()["results"]] == ["event 1", "event 0"]
    assert second.json()["next"] is None


def test_detail_returns_the_event(auth_client):
    event = audit_event(auth_client.user, action="lease", purpose="imap_password")
    response = auth_client.get(f"/api/v1/audit/{event.pk}")
    assert response.status_code == 200
    assert response.json()["action"] == "lease"


@pytest.mark.claim("owner-scoping")
def test_another_users_event_is_404_for_every_method(auth_client, stranger):
    event = audit_event(stranger, detail="private")

    def snapshot():
        with owner_scope(stranger):
            return list(AuditEvent.objects.for_owner(stranger).values())

    assert_cross_owner_404(auth_client, "/api/v1/audit/{id}", event.pk, snapshot=snapshot)
    listing = auth_client.get("/api/v1/audit").json()["results"]
    assert all(e["id"] != str(event.pk) for e in listing)


def test_a_malformed_id_is_404_not_500(auth_client):
    assert auth_client.get("/api/v1/audit/not-a-uuid").status_code == 404
    assert auth_client.get("/api/v1/audit/../account").status_code in (404, 200)


def test_a_malformed_cursor_is_400_invalid_query_not_500(auth_client):
    # A bad query parameter is the client's error (400), not a missing resource (404): docs/api.md.
    response = auth_client.get("/api/v1/audit?cursor=%%%garbage")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_query"
    assert list(response.json()["error"]["fields"]) == ["cursor"]


def test_requires_authentication(db):
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/audit").status_code == 401
