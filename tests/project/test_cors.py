"""CORS: default deny; only /api/v1/ answers the configured origins; other routes never do.

The allowed origin is configured in every test, so a missing header proves the route is excluded,
not merely that no origin was configured.
"""

import pytest
from django.test import Client, override_settings

from tests.harness.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.claim("cors")]

PRODUCTION = "https://app.aiemaily.example"
STAGING = "https://staging.aiemaily.example"
ATTACKER = "https://evil.example"
ALLOWED = override_settings(CORS_ALLOWED_ORIGINS=[PRODUCTION, STAGING])
CORS_HEADERS = (
    "access-control-allow-origin", "access-control-allow-credentials", "access-control-allow-methods",
    "access-control-allow-headers", "access-control-expose-headers", "access-control-max-age",
)
# Routes that must never answer cross-origin, whatever the Origin: webhooks are called server to
# server, OAuth callbacks and admin are top-level navigations, and reports need no readable answer.
NEVER_CORS = [
    "/webhooks/stripe", "/webhooks/gmail", "/webhooks/graph",
    "/api/v1/webhooks/stripe", "/api/v1/connections/oauth/callback", "/api/v1/oauth/google/callback",
    "/connections/oauth/gmail/callback", "/connections/oauth/microsoft/callback",  # the real callbacks
    "/mail/oauth/google/callback", "/oauth/callback",
    "/admin/", "/admin/login/", "/accounts/login/", "/", "/csp-report", "/healthz", "/static/js/app.js",
]


def _cors_headers(response) -> dict[str, str]:
    return {name: response[name] for name in CORS_HEADERS if response.has_header(name)}


def _preflight(path: str, origin: str, method: str = "POST"):
    return Client().options(path, HTTP_ORIGIN=origin, HTTP_ACCESS_CONTROL_REQUEST_METHOD=method,
                            HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type")


@ALLOWED
@pytest.mark.parametrize("origin", [PRODUCTION, STAGING])
def test_api_allows_the_production_and_staging_origins(origin):
    user = UserFactory()
    response = Client().post("/api/v1/auth/token", {"email": user.email, "password": DEFAULT_PASSWORD},
                             content_type="application/json", HTTP_ORIGIN=origin)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == origin
    # Bearer tokens, not cookies: the browser must never attach our session to a cross-origin call.
    assert not response.has_header("Access-Control-Allow-Credentials")
    assert "origin" in response["Vary"].lower()


@ALLOWED
def test_api_preflight_for_an_allowed_origin_names_methods_and_headers():
    response = _preflight("/api/v1/account", PRODUCTION)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == PRODUCTION
    assert "authorization" in response["Access-Control-Allow-Headers"]
    assert "idempotency-key" in response["Access-Control-Allow-Headers"]
    assert "POST" in response["Access-Control-Allow-Methods"]


@ALLOWED
@pytest.mark.parametrize("origin", [ATTACKER, "null", "http://app.aiemaily.example", PRODUCTION + ".evil.example",
                                    "https://evil.example/" + PRODUCTION])
def test_api_denies_every_other_origin(origin):
    assert _cors_headers(_preflight("/api/v1/account", origin)) == {}
    response = Client().get("/api/v1/account", HTTP_ORIGIN=origin)
    assert _cors_headers(response) == {}


def test_default_configuration_allows_no_origin():
    # No CORS_ALLOWED_ORIGINS in the environment: even the "production" origin gets nothing.
    assert _cors_headers(_preflight("/api/v1/account", PRODUCTION)) == {}


@ALLOWED
@pytest.mark.parametrize("path", NEVER_CORS)
def test_non_api_routes_never_send_cors_headers_even_to_an_allowed_origin(path):
    assert _cors_headers(_preflight(path, PRODUCTION)) == {}, path
    assert _cors_headers(Client().get(path, HTTP_ORIGIN=PRODUCTION)) == {}, path
    assert _cors_headers(Client().post(path, b"{}", content_type="application/json", HTTP_ORIGIN=PRODUCTION)) == {}


@ALLOWED
def test_csp_report_posts_with_a_report_content_type_get_no_cors():
    response = Client().post("/csp-report", b'{"csp-report": {}}', content_type="application/csp-report",
                             HTTP_ORIGIN=PRODUCTION, REMOTE_ADDR="198.51.100.91")
    assert response.status_code == 204
    assert _cors_headers(response) == {}
