"""POST/GET/DELETE /api/v1/ai-keys: BYOK keys are sealed on arrival and never returned."""

import pytest

from aiemaily.ownership.binding import owner_scope
from secrets_vault.models import AiKey, Secret
from tests.harness.cross_owner import assert_cross_owner_404

pytestmark = [pytest.mark.django_db, pytest.mark.sqlite_smoke]

OPENAI_KEY = "sk-proj-CanaryOpenAiKey0123456789abcd"
ANTHROPIC_KEY = "sk-ant-api03-CanaryAnthropicKey0123456789"


def _add(client, **body):
    payload = {"provider": "openai", "key": OPENAI_KEY}
    payload.update(body)
    return client.post("/api/v1/ai-keys", payload, format="json")


@pytest.mark.claim("no-plaintext-leaks")
def test_adding_a_key_returns_only_a_hint_and_stores_no_plaintext(auth_client):
    response = _add(auth_client)
    assert response.status_code == 201
    body = response.json()
    assert set(body) >= {"id", "provider", "hint"} and body["hint"] == "…abcd"
    assert OPENAI_KEY not in response.content.decode()
    user = auth_client.user
    with owner_scope(user):
        secret = Secret.objects.for_owner(user).get()
        assert secret.purpose == "ai_key" and secret.state == "pending"
        assert OPENAI_KEY.encode() not in bytes(secret.sealed)
    listing = auth_client.get("/api/v1/ai-keys")
    assert OPENAI_KEY not in listing.content.decode()
    assert listing.json()["results"][0]["hint"] == "…abcd"


def test_anthropic_keys_are_accepted(auth_client):
    response = _add(auth_client, provider="anthropic", key=ANTHROPIC_KEY, base_url="https://api.anthropic.com")
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "openai", "key": "not-a-key"}, "key"),
        ({"provider": "anthropic", "key": OPENAI_KEY}, "key"),
        ({"provider": "mystery", "key": OPENAI_KEY}, "provider"),
        ({"provider": "openai", "key": OPENAI_KEY, "base_url": "http://api.example.com"}, "base_url"),
        ({"provider": "openai", "key": OPENAI_KEY, "base_url": "javascript:alert(1)"}, "base_url"),
        ({"provider": "openai", "key": "sk-" + "a" * 1000}, "key"),
        ({"provider": "openai"}, "key"),
    ],
)
def test_bad_input_is_400_and_never_echoes_the_key(auth_client, body, field):
    response = auth_client.post("/api/v1/ai-keys", body, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"]
    if "key" in body:
        assert body["key"] not in response.content.decode()
    with owner_scope(auth_client.user):
        assert not AiKey.objects.for_owner(auth_client.user).exists()


def test_delete_removes_the_key_and_its_secret(auth_client):
    key_id = _add(auth_client).json()["id"]
    assert auth_client.delete(f"/api/v1/ai-keys/{key_id}").status_code == 204
    assert auth_client.get(f"/api/v1/ai-keys/{key_id}").status_code == 404
    with owner_scope(auth_client.user):
        assert not Secret.objects.for_owner(auth_client.user).exists()


@pytest.mark.claim("owner-scoping")
def test_another_users_key_is_404_for_every_method(auth_client, stranger):
    from tests.conftest import issue_tokens

    stranger_client = type(auth_client)()
    stranger_client.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(stranger_client, stranger)["access"])
    key_id = _add(stranger_client).json()["id"]

    def snapshot():
        with owner_scope(stranger):
            return list(AiKey.objects.for_owner(stranger).values()), list(
                Secret.objects.for_owner(stranger).values("id", "state"))

    assert_cross_owner_404(auth_client, "/api/v1/ai-keys/{id}", key_id, snapshot=snapshot)
    assert auth_client.get("/api/v1/ai-keys").json()["results"] == []


def test_requires_authentication(db):
    from rest_framework.test import APIClient

    assert APIClient().post("/api/v1/ai-keys", {"provider": "openai", "key": OPENAI_KEY},
                            format="json").status_code == 401


def test_the_list_shows_only_my_keys(auth_client, stranger):
    from rest_framework.test import APIClient

    from tests.conftest import issue_tokens

    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(other, stranger)["access"])
    theirs = _add(other).json()["id"]
    mine = _add(auth_client).json()["id"]
    assert [k["id"] for k in auth_client.get("/api/v1/ai-keys").json()["results"]] == [mine]
    assert [k["id"] for k in other.get("/api/v1/ai-keys").json()["results"]] == [theirs]
