"""The AI settings page's "Your own keys": a BYOK key added in the browser is sealed on arrival, listed
only by its last four characters, never echoed (not even when the form is refused), and another
user's key cannot be deleted (404)."""

import pytest
from django.test import Client

from aiemaily.ownership.binding import owner_scope
from secrets_vault.models import AiKey, Secret
from tests.harness.factories import UserFactory

pytestmark = pytest.mark.django_db

OPENAI_KEY = "sk-proj-CanaryPageKey0123456789abcdWXYZ"


def _browser(user) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get("/mail/assistant/")
    return client


def _add(client, **fields):
    data = {"newkey-provider": "openai", "newkey-key": OPENAI_KEY, "newkey-base_url": "",
            "csrfmiddlewaretoken": client.cookies["__Host-csrftoken"].value}
    data.update(fields)
    return client.post("/mail/assistant/keys/", data)


@pytest.mark.claim("no-plaintext-leaks")
def test_a_key_added_on_the_page_is_sealed_and_shown_only_as_a_hint():
    user = UserFactory()
    client = _browser(user)
    response = _add(client)
    assert response.status_code == 302 and response["Location"] == "/mail/assistant/"
    page = client.get("/mail/assistant/").content.decode()
    assert "…WXYZ" in page and OPENAI_KEY not in page
    with owner_scope(user):
        secret = Secret.objects.for_owner(user).get()
        assert secret.purpose == "ai_key" and secret.state == "pending"
        assert OPENAI_KEY.encode() not in bytes(secret.sealed)
        assert AiKey.objects.for_owner(user).get().secret_id == secret.pk


@pytest.mark.parametrize("fields", [
    {"newkey-key": OPENAI_KEY + "!"},
    {"newkey-provider": "anthropic"},
    {"newkey-base_url": "http://api.example.com"},
    {"newkey-provider": "mystery"},
])
def test_a_refused_key_is_400_stores_nothing_and_is_not_echoed(fields):
    user = UserFactory()
    client = _browser(user)
    response = _add(client, **fields)
    assert response.status_code == 400
    assert OPENAI_KEY not in response.content.decode()
    with owner_scope(user):
        assert not Secret.objects.for_owner(user).exists()


def test_adding_needs_csrf():
    user = UserFactory()
    client = _browser(user)
    assert client.post("/mail/assistant/keys/", {"newkey-provider": "openai", "newkey-key": OPENAI_KEY}).status_code \
        == 403


def test_deleting_a_key_and_another_users_key_is_404():
    owner, stranger = UserFactory(), UserFactory()
    owner_client, stranger_client = _browser(owner), _browser(stranger)
    _add(owner_client)
    with owner_scope(owner):
        key_id = AiKey.objects.for_owner(owner).get().pk
    token = stranger_client.cookies["__Host-csrftoken"].value
    assert stranger_client.post(f"/mail/assistant/keys/{key_id}/delete/",
                                {"csrfmiddlewaretoken": token}).status_code == 404
    with owner_scope(owner):
        assert AiKey.objects.for_owner(owner).filter(pk=key_id).exists()
    response = owner_client.post(f"/mail/assistant/keys/{key_id}/delete/",
                                 {"csrfmiddlewaretoken": owner_client.cookies["__Host-csrftoken"].value})
    assert response.status_code == 302
    with owner_scope(owner):
        assert not AiKey.objects.for_owner(owner).exists() and not Secret.objects.for_owner(owner).exists()
