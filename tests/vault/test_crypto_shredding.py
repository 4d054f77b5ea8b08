"""Crypto-shredding reaches bodies and metadata: storage keys live in the key store (not the main
database) and die with the account, so a backup of the main database plus a copy of the object store
opens nothing afterwards; and no failed revocation keeps any key alive."""

import logging
import os
import subprocess
import sys

import pytest
from celery import chain
from django.conf import settings
from django.db import connections
from rest_framework.test import APIClient

# Web queues the deletion chain's tasks by name; a worker has imported their modules before it runs one
# (imported here, not through Celery's loader, which sets Django up again and so drops caplog's handler).
import billing.tasks  # noqa: F401
import mail.tasks  # noqa: F401
import secrets_vault.tasks  # noqa: F401
from accounts.models import User
from aiemaily.ownership.binding import owner_scope
from mail import blobstore
from mail.models import Connection, LegacyStorageKey
from secrets_vault import keystore
from secrets_vault.crypto import SecretStr
from secrets_vault.models import AuditEvent, DataKey, Secret, StorageKey
from secrets_vault.services import secret_submit
from secrets_vault.vault_services import secret_put
from tests.conftest import issue_tokens
from tests.harness.factories import DEFAULT_PASSWORD, UserFactory
from tests.harness.kms_fixtures import free_port
from tests.harness.oauth_flow import google, google_server  # noqa: F401 - fixtures: a local Google

pytestmark = pytest.mark.claim("crypto-shredding")

BODY = b"From: a@example.test\r\nSubject: the merger\r\n\r\nThe board meets on Friday about the merger.\r\n"


@pytest.fixture
def objects_dir(settings, tmp_path):
    blobstore._storage.cache_clear()
    blobstore.key_cache.clear()
    settings.AIEMAILY_STORAGE = "local"
    settings.AIEMAILY_OBJECTS_DIR = tmp_path / "objects"
    yield tmp_path / "objects"
    blobstore._storage.cache_clear()
    blobstore.key_cache.clear()


def _delete_account(user, monkeypatch, django_capture_on_commit_callbacks):
    """DELETE /api/v1/account, then run the chain it queued, in order, as the workers would."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer " + issue_tokens(client, user)["access"])
    sent = []
    with monkeypatch.context() as patch:
        patch.setattr("celery.canvas._chain.apply_async", lambda self, *a, **k: sent.append(self))
        with django_capture_on_commit_callbacks(execute=True):
            response = client.delete("/api/v1/account", {"password": DEFAULT_PASSWORD}, format="json")
    assert response.status_code == 202
    return chain(*sent[0].tasks).apply()


def _pg_dump(alias: str) -> str:
    """A plain-SQL backup of one database, as an operator's nightly pg_dump would take it."""
    admin = os.environ["TEST_DATABASE_URL"].rsplit("/", 1)[0]
    url = f"{admin}/{connections[alias].settings_dict['NAME']}"
    return subprocess.run(["pg_dump", "--data-only", url], capture_output=True, text=True, check=True).stdout


@pytest.mark.django_db(transaction=True, databases=["default", "vault", "keys"])
def test_a_backup_of_the_main_database_and_the_object_store_opens_nothing_after_deletion(
        objects_dir, monkeypatch, django_capture_on_commit_callbacks):
    user = UserFactory()
    with owner_scope(user):
        key = blobstore.put(user.pk, ("messages", "c1", "m1"), BODY)
        sealed = blobstore.seal_field(user.pk, "ai/r1/text", b"Summary: a merger on Friday")
    wrapped = bytes(StorageKey.objects.get(owner_id=user.pk).wrapped)

    # The backups an attacker (or a careless restore) might hold: the main database, the objects.
    main_backup = _pg_dump("default")
    object_copy = (objects_dir / key).read_bytes()
    assert wrapped.hex() not in main_backup  # the storage key is not in the main database at all
    assert "secrets_vault_storagekey" not in main_backup  # nor is the key store's table
    assert wrapped.hex() in _pg_dump("keys")  # ...it is in the key store (so the search above can hit)
    blobstore.key_cache.clear()
    with owner_scope(user):
        assert blobstore.get(user.pk, key) == BODY  # before deletion, the copies do open

    result = _delete_account(user, monkeypatch, django_capture_on_commit_callbacks)
    assert result.successful()
    assert not User.objects.filter(pk=user.pk).exists()
    assert not StorageKey.objects.filter(owner_id=user.pk).exists()
    assert not DataKey.objects.filter(owner_id=user.pk).exists()
    assert not (objects_dir / key).exists()

    # Restore the copies, with the storage KMS still at hand: nothing opens, from a fresh cache.
    (objects_dir / key).parent.mkdir(parents=True, exist_ok=True)
    (objects_dir / key).write_bytes(object_copy)
    blobstore.key_cache.clear()
    with pytest.raises(blobstore.BlobError):
        blobstore.get(user.pk, key)
    with pytest.raises(blobstore.BlobError):
        blobstore.open_field(user.pk, "ai/r1/text", sealed)
    assert b"merger" not in object_copy and "merger" not in main_backup


@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_shredding_reaches_a_warm_cache(objects_dir):
    user = UserFactory()
    with owner_scope(user):
        key = blobstore.put(user.pk, ("messages", "c1", "m1"), BODY)
        assert blobstore.get(user.pk, key) == BODY  # the unwrapped key is now cached in this process
    assert blobstore.storage_keys_shred(user.pk) == 1
    with owner_scope(user), pytest.raises(blobstore.BlobError):
        blobstore.get(user.pk, key)


# --- revocation failures never block shredding and purging ----------------------------------------

def _gmail_connection(user, *, stored: bool):
    with owner_scope(user):
        if stored:
            token = secret_put(owner_id=user.pk, purpose="oauth_refresh_token", value=SecretStr("1//refresh-canary"))
        else:  # never reached the vault: the vault refuses to decrypt a pending secret
            token = secret_submit(owner=user, purpose="oauth_refresh_token", value=SecretStr("1//refresh-canary"),
                                  enqueue=False)
        return Connection.objects.create(owner=user, provider="gmail", status="active", oauth_secret=token)


def _assert_deleted_and_logged(user, caplog, reason_part: str):
    assert not User.objects.filter(pk=user.pk).exists()
    assert not DataKey.objects.filter(owner_id=user.pk).exists()
    assert not StorageKey.objects.filter(owner_id=user.pk).exists()
    with owner_scope(user.pk):
        assert not Secret.objects.for_owner(user.pk).exists()
    records = [r for r in caplog.records if getattr(r, "event", "") == "account_delete_revoke_failed"]
    assert len(records) == 1 and reason_part in records[0].getMessage()
    assert "refresh-canary" not in caplog.text


@pytest.mark.django_db(transaction=True, databases=["default", "vault", "keys"])
def test_a_vault_refusal_during_revocation_still_shreds_and_purges(
        objects_dir, monkeypatch, django_capture_on_commit_callbacks, caplog):
    user = UserFactory()
    _gmail_connection(user, stored=False)
    with owner_scope(user):
        blobstore.put(user.pk, ("messages", "c1", "m1"), BODY)
        keystore.active_dek(user.pk)
    caplog.set_level(logging.INFO)
    result = _delete_account(user, monkeypatch, django_capture_on_commit_callbacks)
    assert result.successful()
    _assert_deleted_and_logged(user, caplog, "the vault refused")


@pytest.mark.django_db(transaction=True, databases=["default", "vault", "keys"])
def test_a_kms_that_stays_unavailable_during_revocation_still_shreds_and_purges(
        objects_dir, monkeypatch, django_capture_on_commit_callbacks, caplog):
    user = UserFactory()
    _gmail_connection(user, stored=True)  # wrapped under the working KEK
    with owner_scope(user):
        blobstore.put(user.pk, ("messages", "c1", "m1"), BODY)
    # Now the KMS goes away: an AWS KMS endpoint where nothing listens (every retry fails).
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(settings, "AIEMAILY_KMS_CONFIG", {
        "backend": "aws", "key_id": "alias/aiemaily-kek", "region": "us-east-1",
        "endpoint_url": f"http://127.0.0.1:{free_port()}"})
    keystore.kms.cache_clear()
    keystore.dek_cache.clear()
    caplog.set_level(logging.INFO)
    try:
        result = _delete_account(user, monkeypatch, django_capture_on_commit_callbacks)
    finally:
        keystore.kms.cache_clear()
    assert result.successful()
    _assert_deleted_and_logged(user, caplog, "the KMS stayed unavailable")
    retried = [r for r in caplog.records if "Retry in" in r.getMessage()]
    assert len(retried) >= 1  # it did try again before giving up


@pytest.mark.django_db(transaction=True, databases=["default", "vault", "keys"])
def test_a_provider_that_stays_unreachable_still_shreds_and_purges(
        objects_dir, monkeypatch, django_capture_on_commit_callbacks, caplog, google, settings):  # noqa: F811
    user = UserFactory()
    _gmail_connection(user, stored=True)
    settings.GOOGLE_REVOKE_URI = f"https://127.0.0.1:{free_port()}/revoke"  # nothing listens there
    caplog.set_level(logging.INFO)
    result = _delete_account(user, monkeypatch, django_capture_on_commit_callbacks)
    assert result.successful()
    _assert_deleted_and_logged(user, caplog, "the provider stayed unreachable")


@pytest.mark.django_db(transaction=True, databases=["default", "vault", "keys"])
def test_a_revocation_that_works_logs_no_failure(
        objects_dir, monkeypatch, django_capture_on_commit_callbacks, caplog, google):  # noqa: F811
    user = UserFactory()
    _gmail_connection(user, stored=True)
    caplog.set_level(logging.INFO)
    assert _delete_account(user, monkeypatch, django_capture_on_commit_callbacks).successful()
    assert len(google.requests_to("/revoke")) == 1  # it did reach the provider
    assert not [r for r in caplog.records if getattr(r, "event", "") == "account_delete_revoke_failed"]
    assert not User.objects.filter(pk=user.pk).exists()


# --- storage keys kept in the main database by an older release -----------------------------------

def _legacy_key(user):
    """A storage key as releases before the key store wrote it: in the main database."""
    from secrets_vault.kms import kms_from_settings

    raw = os.urandom(32)
    wrapped = kms_from_settings(settings.AIEMAILY_STORAGE_KMS_CONFIG).wrap(
        raw, context=blobstore.storage_key_context(user.pk, 1))
    with owner_scope(user):
        LegacyStorageKey.objects.create(owner=user, version=1, wrapped=wrapped.ciphertext, kek_id=wrapped.key_id,
                                        kek_version=wrapped.key_version)
    return raw


def _object_under(user, raw_key: bytes, parts=("messages", "c1", "old")) -> str:
    """An object written by the old release under its (legacy) storage key."""
    blobstore.key_cache.put(user.pk, 1, raw_key)
    blobstore.key_cache.set_active(user.pk, 1)
    with owner_scope(user):
        key = blobstore.put(user.pk, parts, BODY)
    blobstore.key_cache.clear()
    return key


@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_a_storage_key_left_in_the_main_database_moves_to_the_key_store_on_first_use(objects_dir):
    user = UserFactory()
    key = _object_under(user, _legacy_key(user))
    assert not StorageKey.objects.filter(owner_id=user.pk).exists()
    with owner_scope(user):
        assert blobstore.get(user.pk, key) == BODY
        assert not LegacyStorageKey.objects.for_owner(user).exists()
        # New objects go on under the same (moved) key, not a fresh version 1 that would collide.
        fresh = blobstore.put(user.pk, ("messages", "c1", "new"), BODY)
        blobstore.key_cache.clear()
        assert blobstore.get(user.pk, fresh) == BODY
    assert list(StorageKey.objects.filter(owner_id=user.pk).values_list("version", flat=True)) == [1]


@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_shredding_destroys_a_storage_key_still_in_the_main_database(objects_dir):
    user = UserFactory()
    key = _object_under(user, _legacy_key(user))
    assert blobstore.storage_keys_shred(user.pk) == 1
    with owner_scope(user):
        assert not LegacyStorageKey.objects.for_owner(user).exists()
        with pytest.raises(blobstore.BlobError):
            blobstore.get(user.pk, key)


@pytest.mark.django_db(transaction=True, databases=["default", "maintenance", "keys"])
def test_storage_keys_move_moves_every_owner_and_can_run_again(objects_dir):
    from io import StringIO

    from django.core.management import call_command

    users = [UserFactory() for _ in range(3)]
    keys = {user.pk: _object_under(user, _legacy_key(user)) for user in users}
    out = StringIO()
    call_command("storage_keys_move", stdout=out)
    assert "3/3" in out.getvalue()
    assert not LegacyStorageKey.objects.unscoped(reason="test: the legacy table is empty").exists()
    for user in users:
        with owner_scope(user):
            assert blobstore.get(user.pk, keys[user.pk]) == BODY
    again = StringIO()
    call_command("storage_keys_move", stdout=again)
    assert "nothing to move" in again.getvalue()


def test_only_the_mail_zones_have_the_key_store_and_production_insists_on_it():
    # Production settings, as deployed: web (a mail zone) has the `keys` alias and refuses to start
    # without KEYS_DATABASE_URL; worker-vault (DEKs only) has no such alias at all.
    from tests.harness.processes import ROOT, role_env

    code = ("import django; django.setup(); from django.conf import settings; "
            "print('keys alias' if 'keys' in settings.DATABASES else 'no keys alias')")

    def start(role, *, without_keys=False):
        env = role_env(role, production=True, extra={"ALLOWED_HOSTS": "aiemaily.example"})
        if without_keys:
            env.pop("KEYS_DATABASE_URL")
        return subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=60)

    web = start("web")
    assert web.stdout.strip().splitlines()[-1:] == ["keys alias"], web.stderr[-2000:]
    refused = start("web", without_keys=True)
    assert refused.returncode != 0 and "KEYS_DATABASE_URL must be set" in refused.stderr
    vault = start("vault")
    assert vault.stdout.strip().splitlines()[-1:] == ["no keys alias"], vault.stderr[-2000:]


@pytest.mark.django_db(databases=["default", "vault", "keys"])
def test_deletion_audit_says_what_was_destroyed(objects_dir):
    from accounts.tasks import account_purge

    user = UserFactory()
    with owner_scope(user):
        blobstore.put(user.pk, ("messages", "c1", "m1"), BODY)
    User.objects.filter(pk=user.pk).update(is_active=False)
    result = account_purge(str(user.pk))
    assert result["destroyed_storage_keys"] == 1 and result["deleted_objects"] == 1
    with owner_scope(user.pk):
        assert not AuditEvent.objects.for_owner(user.pk).exists()  # purged with the account
