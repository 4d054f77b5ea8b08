"""JWT authentication: signature, expiry, audience, algorithm, rotation and reuse detection."""

import base64
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from rest_framework.test import APIClient

from tests.conftest import issue_tokens
from tests.harness.factories import DEFAULT_PASSWORD

pytestmark = [pytest.mark.django_db, pytest.mark.claim("jwt-auth")]


def _claims(user, **overrides):
    now = int(time.time())
    claims = {
        "token_type": "access", "exp": now + 300, "iat": now, "jti": uuid.uuid4().hex,
        "sub": str(user.id), "aud": settings.JWT_AUDIENCE, "iss": settings.SIMPLE_JWT["ISSUER"],
    }
    claims.update(overrides)
    return claims


def _get_account(token):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get("/api/v1/account")


def _assert_401(response):
    assert response.status_code == 401
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_valid_token_reaches_the_account(user):
    tokens = issue_tokens(APIClient(), user)
    response = _get_account(tokens["access"])
    assert response.status_code == 200
    assert response.json()["email"] == user.email


def test_tokens_are_eddsa_signed_and_carry_audience_and_issuer(user):
    tokens = issue_tokens(APIClient(), user)
    header = jwt.get_unverified_header(tokens["access"])
    assert header["alg"] == "EdDSA"
    claims = jwt.decode(tokens["access"], settings.JWT_PUBLIC_KEY, algorithms=["EdDSA"],
                        audience=settings.JWT_AUDIENCE)
    assert claims["sub"] == str(user.id)
    assert claims["exp"] - claims["iat"] <= 15 * 60


def test_no_token_is_401_with_the_error_envelope(db):
    _assert_401(APIClient().get("/api/v1/account"))


def test_an_expired_token_is_refused(user):
    token = jwt.encode(_claims(user, exp=int(time.time()) - 1), settings.JWT_PRIVATE_KEY, algorithm="EdDSA")
    _assert_401(_get_account(token))


def test_a_token_signed_by_another_key_is_refused(user):
    other = Ed25519PrivateKey.generate()
    token = jwt.encode(_claims(user), other, algorithm="EdDSA")
    _assert_401(_get_account(token))


def test_a_tampered_payload_is_refused(user, stranger):
    tokens = issue_tokens(APIClient(), user)
    head, payload, signature = tokens["access"].split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = str(stranger.id)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    _assert_401(_get_account(f"{head}.{forged}.{signature}"))


def test_a_token_for_another_audience_is_refused(user):
    token = jwt.encode(_claims(user, aud="some-other-service"), settings.JWT_PRIVATE_KEY, algorithm="EdDSA")
    _assert_401(_get_account(token))


def test_a_token_without_audience_is_refused(user):
    claims = _claims(user)
    del claims["aud"]
    _assert_401(_get_account(jwt.encode(claims, settings.JWT_PRIVATE_KEY, algorithm="EdDSA")))


def test_alg_none_is_refused(user):
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps(_claims(user)).encode()).rstrip(b"=").decode()
    _assert_401(_get_account(f"{header}.{payload}."))


def test_hs256_signed_with_the_public_key_is_refused(user):
    # The classic algorithm-confusion attack: the public key is public.
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps(_claims(user)).encode()).rstrip(b"=").decode()
    import hashlib
    import hmac

    signature = hmac.new(settings.JWT_PUBLIC_KEY.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    _assert_401(_get_account(token))


def test_a_refresh_token_cannot_be_used_as_an_access_token(user):
    tokens = issue_tokens(APIClient(), user)
    _assert_401(_get_account(tokens["refresh"]))


def test_a_deactivated_user_is_refused(user):
    tokens = issue_tokens(APIClient(), user)
    user.is_active = False
    user.save(update_fields=["is_active"])
    _assert_401(_get_account(tokens["access"]))


def test_wrong_password_gets_401_and_never_echoes_it(user):
    response = APIClient().post("/api/v1/auth/token", {"email": user.email, "password": "canary-pw-9731"},
                                format="json")
    assert response.status_code == 401
    assert b"canary-pw-9731" not in response.content
    assert response.json()["error"]["code"]


def test_refresh_rotates_and_the_new_refresh_token_works(user):
    client = APIClient()
    first = issue_tokens(client, user)
    rotated = client.post("/api/v1/auth/token/refresh", {"refresh": first["refresh"]}, format="json")
    assert rotated.status_code == 200
    body = rotated.json()
    assert body["refresh"] != first["refresh"]
    assert _get_account(body["access"]).status_code == 200
    again = client.post("/api/v1/auth/token/refresh", {"refresh": body["refresh"]}, format="json")
    assert again.status_code == 200


def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(user):
    client = APIClient()
    first = issue_tokens(client, user)
    rotated = client.post("/api/v1/auth/token/refresh", {"refresh": first["refresh"]}, format="json").json()
    other_device = issue_tokens(client, user)

    reuse = client.post("/api/v1/auth/token/refresh", {"refresh": first["refresh"]}, format="json")
    assert reuse.status_code == 401
    assert "already used" in reuse.json()["error"]["message"]

    for refresh in (rotated["refresh"], other_device["refresh"]):
        response = client.post("/api/v1/auth/token/refresh", {"refresh": refresh}, format="json")
        assert response.status_code == 401


def test_a_garbage_refresh_token_is_401_not_500(db):
    response = APIClient().post("/api/v1/auth/token/refresh", {"refresh": "not-a-jwt"}, format="json")
    assert response.status_code == 401
    oversized = APIClient().post("/api/v1/auth/token/refresh", {"refresh": "x" * 10000}, format="json")
    assert oversized.status_code == 400


def test_an_access_token_cannot_be_used_to_refresh(user):
    tokens = issue_tokens(APIClient(), user)
    response = APIClient().post("/api/v1/auth/token/refresh", {"refresh": tokens["access"]}, format="json")
    assert response.status_code == 401


def test_token_endpoint_is_throttled_per_account(user, settings):
    settings.LOGIN_THROTTLE_MAX_FAILURES = 2
    client = APIClient()
    for _ in range(2):
        client.post("/api/v1/auth/token", {"email": user.email, "password": "wrong one here"}, format="json")
    response = client.post("/api/v1/auth/token", {"email": user.email, "password": DEFAULT_PASSWORD},
                           format="json")
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"


def test_malformed_json_is_400_with_the_envelope(db):
    response = APIClient().post("/api/v1/auth/token", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_a_password_is_taken_as_typed_spaces_included(user):
    """The sign-in page keeps a password's spaces (strip=False); the API must too, or a password that
    begins or ends with one signs in on the web and never through the API."""
    user.set_password("  spaced out passphrase ")
    user.save(update_fields=["password"])
    tokens = issue_tokens(APIClient(), user, password="  spaced out passphrase ")
    assert tokens["access"] and tokens["refresh"]
    stripped = APIClient().post("/api/v1/auth/token", {"email": user.email, "password": "spaced out passphrase"},
                                format="json")
    assert stripped.status_code == 401


def test_a_whitespace_only_password_is_wrong_credentials_not_a_blank_field(user):
    # The schema allows it (a string of one or more characters), so the answer is 401, never 400.
    response = APIClient().post("/api/v1/auth/token", {"email": user.email, "password": "   "}, format="json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] != "invalid"
