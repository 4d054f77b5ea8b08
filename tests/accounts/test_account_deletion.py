"""Deleting an account: sign-in stops at once; worker-vault destroys the DEKs before the rows go."""

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from accounts.tasks import account_purge
from aiemaily.ownership.binding import owner_scope
from secrets_vault.models import DataKey, Secret
from secrets_vault.tasks import owner_shred
from tests.conftest import issue_tokens
from tests.harness.factories import DEFAULT_PASSWORD, UserFactory, stored_secret

pytestmark = pytest.mark.django_db(databases=["default", "vault"])


def _client(user):
    client = APIClient()
    tokens = issue_tokens(client, user)
    client.credentials(HTTP_AUTHORIZATION="Bearer " + tokens["access"])
    return client, tokens


def test_wrong_password_deletes_nothing(db):
    user = UserFactory()
    client, _ = _client(user)
    response = client.delete("/api/v1/account", {"password": "not the password"}, format="json")
    assert response.status_code == 403
    user.refresh_from_db()
    assert user.is_active


@pytest.mark.claim("no-plaintext-leaks")
def test_delete_closes_now_then_shreds_then_purges(django_capture_on_commit_callbacks, monkeypatch):
    user = UserFactory()
    secret = stored_secret(user)
    leftover = bytes(secret.ciphertext)
    client, tokens = _client(user)
    sent = []
    monkeypatch.setattr("celery.canvas._chain.apply_async", lambda self, *a, **k: sent.append(self))
    with django_capture_on_commit_callbacks(execute=True):
        response = client.delete("/api/v1/account", {"password": DEFAULT_PASSWORD}, format="json")
    assert response.status_code == 202
    # Signed out everywhere at once: no new tokens, no refresh.
    assert APIClient().post("/api/v1/auth/token", {"email": user.email, "password": DEFAULT_PASSWORD},
                            format="json").status_code == 401
    assert APIClient().post("/api/v1/auth/token/refresh", {"refresh": tokens["refresh"]},
                            format="json").status_code == 401
    # The chain is shred (vault queue) first, then purge.
    assert [t.name for t in sent[0].tasks] == ["secrets_vault.tasks.owner_shred", "accounts.tasks.account_purge"]
    assert sent[0].tasks[0].options.get("queue") in (None, "vault")

    owner_shred(str(user.pk))
    assert not DataKey.objects.filter(owner_id=user.pk).exists()
    from mail import blobstore

    with owner_scope(user):
        blob = blobstore.put(user.pk, ("messages", "c1", "m1"), b"a stored message")
    result = account_purge(str(user.pk))
    assert result["deleted_objects"] == 1
    with pytest.raises(blobstore.BlobError):
        blobstore.get(user.pk, blob)
    assert not User.objects.filter(pk=user.pk).exists()
    with owner_scope(user.pk):
        assert not Secret.objects.for_owner(user.pk).exists()
    assert leftover  # whatever copy of the ciphertext survived elsewhere has no key any more


def test_purge_removes_an_account_holding_a_byok_key(db):
    from secrets_vault.models import AiKey

    user = UserFactory()
    with owner_scope(user):
        AiKey.objects.create(owner=user, provider="openai", secret=stored_secret(user, purpose="ai_key"))
    User.objects.filter(pk=user.pk).update(is_active=False)
    account_purge(str(user.pk))
    assert not User.objects.filter(pk=user.pk).exists()
    with owner_scope(user.pk):
        assert not AiKey.objects.for_owner(user.pk).exists() and not Secret.objects.for_owner(user.pk).exists()


def test_purge_refuses_an_active_account(db):
    user = UserFactory()
    account_purge(str(user.pk))
    assert User.objects.filter(pk=user.pk).exists()


def test_the_ui_deletes_with_password_confirmation(client):
    user = UserFactory()
    client.force_login(user)
    assert client.get("/accounts/delete/").status_code == 200
    bad = client.post("/accounts/delete/", {"password": "wrong wrong"})
    assert bad.status_code == 400
    user.refresh_from_db()
    assert user.is_active
    good = client.post("/accounts/delete/", {"password": DEFAULT_PASSWORD})
    assert good.status_code == 302
    user.refresh_from_db()
    assert not user.is_active
    assert client.get("/dashboard/").status_code == 302


def test_delete_revokes_provider_grants_before_shredding(django_capture_on_commit_callbacks, monkeypatch):
    from mail.models import Connection
    from secrets_vault.crypto import SecretStr
    from secrets_vault.services import secret_submit

    user = UserFactory()
    with owner_scope(user):
        token = secret_submit(owner=user, purpose="oauth_refresh_token", value=SecretStr("1//refresh"), enqueue=False)
        gmail = Connection.objects.create(owner=user, provider="gmail", status="active", oauth_secret=token)
        Connection.objects.create(owner=user, provider="imap", status="active")
    client, _ = _client(user)
    sent = []
    monkeypatch.setattr("celery.canvas._chain.apply_async", lambda self, *a, **k: sent.append(self))
    with django_capture_on_commit_callbacks(execute=True):
        assert client.delete("/api/v1/account", {"password": DEFAULT_PASSWORD}, format="json").status_code == 202
    steps = sent[0].tasks
    assert [t.name for t in steps] == ["secrets_vault.tasks.oauth_revoke_for_deletion",
                                       "secrets_vault.tasks.owner_shred", "accounts.tasks.account_purge"]
    assert list(steps[0].args) == [str(user.pk), str(gmail.pk), "gmail", str(token.pk)]
