"""Conventions every API view keeps: deny by default, JSON error envelope, OpenAPI schema."""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient
from rest_framework.views import APIView

from aiemaily.api.permissions import DenyAll


def _api_views(resolver=None, prefix=""):
    resolver = resolver or get_resolver()
    for pattern in resolver.url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _api_views(pattern, route)
        elif isinstance(pattern, URLPattern):
            view_class = getattr(pattern.callback, "cls", None)
            if view_class and issubclass(view_class, APIView) and route.startswith("api/v1/"):
                yield route, view_class


def test_every_api_view_declares_who_may_use_it():
    views = list(_api_views())
    assert views, "no API views found"
    for route, view_class in views:
        declared = view_class.permission_classes
        assert declared and DenyAll not in declared, f"{route} ({view_class.__name__}) relies on the default"


def test_unknown_api_path_is_json_404(db):
    response = APIClient().get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Not found."}}


@pytest.mark.django_db
def test_wrong_method_is_405_with_envelope(auth_client):
    response = auth_client.delete("/api/v1/auth/token")
    assert response.status_code in (401, 405)
    assert "error" in response.json()


def test_openapi_schema_is_served(db):
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/auth/token" in schema["paths"]
    assert "/api/v1/account" in schema["paths"]


def test_api_docs_page_has_no_inline_script(db):
    response = APIClient().get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<script>" not in html.replace(" ", "")


@pytest.mark.django_db
def test_unauthenticated_throttle_answers_429_with_retry_after(monkeypatch):
    from rest_framework.throttling import AnonRateThrottle

    monkeypatch.setattr(AnonRateThrottle, "THROTTLE_RATES", {"anon": "2/min"})
    monkeypatch.setattr(AnonRateThrottle, "cache_format", "throttle_test_%(scope)s_%(ident)s")
    from django.core.cache import cache

    cache.delete("throttle_test_anon_10.99.0.1")
    client = APIClient(REMOTE_ADDR="10.99.0.1")
    statuses = [client.post("/api/v1/auth/token", {}, format="json").status_code for _ in range(4)]
    assert statuses[:2] == [400, 400] and statuses[-1] == 429, statuses
    assert client.post("/api/v1/auth/token", {}, format="json").has_header("Retry-After")


@pytest.mark.django_db
def test_deeply_nested_json_is_400_not_500(auth_client):
    body = "[" * 100_000 + "]" * 100_000
    response = auth_client.post("/api/v1/ai-keys", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/connections", "/api/v1/messages", "/api/v1/outbox", "/api/v1/ai-keys",
                                  "/api/v1/audit", "/api/v1/delegations", "/api/v1/shared/messages"])
def test_every_list_answers_a_forged_cursor_with_400_not_500(auth_client, path):
    # A bad query parameter is the client's error (400), not a missing resource (404): docs/api.md.
    response = auth_client.get(path + "?cursor=%%%garbage")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_query"
    assert auth_client.get(path + "?limit=-5").status_code == 400  # no silent fallback to the default


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/v1/messages/not-a-uuid", "/api/v1/shared/messages/1",
                                  "/api/v1/outbox/%27%20or%201=1", "/api/v1/connections/0/sync"])
def test_malformed_ids_are_404(auth_client, path):
    assert auth_client.get(path).status_code == 404
    assert auth_client.post(path, {}, format="json").status_code == 404
    assert auth_client.delete("/api/v1/delegations/not-a-uuid").status_code == 404


@pytest.mark.django_db
def test_deleting_the_account_without_a_password_is_400(auth_client):
    for body in ({}, {"password": ""}):
        response = auth_client.delete("/api/v1/account", body, format="json")
        assert response.status_code == 400 and "password" in response.json()["error"]["fields"]
    assert auth_client.get("/api/v1/account").status_code == 200
