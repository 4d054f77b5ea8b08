"""Storage-key management: creating the storage KMS key (local and AWS, the latter against moto's
server), rotating it with an online re-wrap, and rotating users' storage keys; each resumable."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from aiemaily.ownership.binding import owner_scope
from mail import blobstore, storage_rotation
from mail.assistant.models import AiResult, field_name
from mail.models import Connection, Folder, Message
from secrets_vault.crypto import parse_header
from secrets_vault.models import StorageKey
from tests.harness.factories import UserFactory
from tests.harness.kms_fixtures import moto_server

pytestmark = [pytest.mark.django_db, pytest.mark.claim("per-object-keys")]

BODY = b"From: a@example.test\r\nSubject: quarterly numbers\r\n\r\nRevenue is up.\r\n"


@pytest.fixture
def storage(settings, tmp_path):
    blobstore._storage.cache_clear()
    blobstore.storage_kms.cache_clear()
    blobstore.key_cache.clear()
    settings.AIEMAILY_STORAGE = "local"
    settings.AIEMAILY_OBJECTS_DIR = tmp_path / "objects"
    settings.AIEMAILY_STORAGE_KMS_CONFIG = {"backend": "local", "key_dir": str(tmp_path / "storage-kek"),
                                            "create": False}
    call_command("storage_kms_rotate", "--init", stdout=StringIO())
    yield tmp_path
    blobstore._storage.cache_clear()
    blobstore.storage_kms.cache_clear()
    blobstore.key_cache.clear()


def _mailbox(user, count=3):
    """`count` stored messages and one sealed AI summary, as sync and worker-ai write them."""
    with owner_scope(user):
        connection = Connection.objects.create(owner=user, provider="imap", status="active")
        folder = Folder.objects.create(owner=user, connection=connection, name="INBOX")
        keys = [blobstore.put(user.pk, ("messages", str(connection.pk), f"m{n}"), BODY) for n in range(count)]
        first = Message.objects.create(owner=user, connection=connection, folder=folder, blob_key=keys[0])
        result = AiResult.objects.create(owner=user, message=first, kind="summary", status="ready")
        result.text_ct = blobstore.seal_field(user.pk, field_name(result.pk, "text"), b"Revenue is up.")
        result.save(update_fields=["text_ct"])
    return keys, result


def _assert_everything_opens(user, keys, result, *, version=None):
    blobstore.key_cache.clear()
    with owner_scope(user):
        for key in keys:
            assert blobstore.get(user.pk, key) == BODY
            if version is not None:
                blob = blobstore.objects().read(user.pk, key)
                assert parse_header(blob[2:]).key_version == version
        row = AiResult.objects.for_owner(user).get(pk=result.pk)
        assert blobstore.open_field(user.pk, field_name(row.pk, "text"), bytes(row.text_ct)) == b"Revenue is up."


def test_init_creates_the_local_storage_kms_key_once(storage):
    out = StringIO()
    call_command("storage_kms_rotate", "--init", stdout=out)
    assert "version 1" in out.getvalue()
    assert len(list((storage / "storage-kek").iterdir())) == 1


def test_init_creates_the_aws_storage_kms_key_and_alias(settings, monkeypatch):
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    with moto_server() as endpoint:
        settings.AIEMAILY_STORAGE_KMS_CONFIG = {"backend": "aws", "key_id": "alias/aiemaily-storage",
                                                "region": "us-east-1", "endpoint_url": endpoint}
        blobstore.storage_kms.cache_clear()
        with pytest.raises(CommandError):  # production never creates it by accident on first use
            call_command("storage_kms_rotate", "--resume", stdout=StringIO())
        out = StringIO()
        call_command("storage_kms_rotate", "--init", stdout=out)
        assert "storage KMS key ready: version 1" in out.getvalue()
        blobstore.storage_kms.cache_clear()
        assert blobstore.storage_kms().wrap(b"k" * 32, context=blobstore.storage_key_context(1, 1)).key_version == 1
    blobstore.storage_kms.cache_clear()


def test_kms_rotation_rewraps_every_storage_key_and_is_resumable(storage):
    users = [UserFactory() for _ in range(3)]
    mailboxes = {user.pk: _mailbox(user) for user in users}
    service = blobstore.storage_kms()
    service.rotate()

    class Interrupted(Exception):
        pass

    def stop_after_first(done, total):
        raise Interrupted

    with pytest.raises(Interrupted):
        storage_rotation.rewrap_all(batch_size=1, progress=stop_after_first)
    assert sorted(StorageKey.objects.values_list("kek_version", flat=True)) == [1, 1, 2]  # one row moved

    out = StringIO()
    call_command("storage_kms_rotate", "--resume", stdout=out)
    assert "re-wrapped 2/2" in out.getvalue() and "it can be retired" in out.getvalue()
    assert set(StorageKey.objects.values_list("kek_version", flat=True)) == {2}
    for user in users:
        _assert_everything_opens(user, *mailboxes[user.pk])

    out = StringIO()
    call_command("storage_kms_rotate", stdout=out)  # a full rotation: version 3, all three re-wrapped
    assert "new storage KMS key version 3" in out.getvalue() and "re-wrapped 3/3" in out.getvalue()


def test_a_users_storage_key_rotation_rewraps_objects_and_columns_then_retires_the_old_key(storage, settings):
    user, other = UserFactory(), UserFactory()
    keys, result = _mailbox(user)
    other_keys, other_result = _mailbox(other)
    before = {key: blobstore.objects().read(user.pk, key) for key in keys}

    out = StringIO()
    call_command("storage_keys_rotate", "--owner", str(user.pk), stdout=out)
    # Re-wrapped at once, but the old version waits out the other processes' key caches. Six values:
    # three objects, the AI summary, and the two metadata keys (message columns, search index).
    assert "6 re-wrapped" in out.getvalue()
    assert "run again with --resume" in out.getvalue()
    assert sorted(StorageKey.objects.filter(owner_id=user.pk).values_list("version", flat=True)) == [1, 2]
    _assert_everything_opens(user, keys, result, version=2)
    for key in keys:  # only the wrapped object key changed; the encrypted body is the same bytes
        after = blobstore.objects().read(user.pk, key)
        assert after != before[key] and after[-len(BODY) - 16:] == before[key][-len(BODY) - 16:]

    settings.AIEMAILY_STORAGE_KEY_CACHE_SECONDS = 0
    out = StringIO()
    call_command("storage_keys_rotate", "--owner", str(user.pk), "--resume", stdout=out)
    assert "0 re-wrapped, 6 already current" in out.getvalue() and "retired [1]" in out.getvalue()
    assert list(StorageKey.objects.filter(owner_id=user.pk).values_list("version", flat=True)) == [2]
    _assert_everything_opens(user, keys, result, version=2)
    # The other user was not touched.
    assert list(StorageKey.objects.filter(owner_id=other.pk).values_list("version", flat=True)) == [1]
    _assert_everything_opens(other, other_keys, other_result, version=1)


def test_an_interrupted_user_key_rotation_finishes_with_resume(storage, settings, monkeypatch):
    settings.AIEMAILY_STORAGE_KEY_CACHE_SECONDS = 0
    user = UserFactory()
    keys, result = _mailbox(user, count=5)

    class Interrupted(Exception):
        pass

    original, calls = storage_rotation._rewrap_object, []

    def crash_on_the_third_object(*args):
        if len(calls) == 2:
            raise Interrupted  # the process dies here: two objects re-wrapped, three not
        calls.append(1)
        return original(*args)

    with monkeypatch.context() as patch:
        patch.setattr(storage_rotation, "_rewrap_object", crash_on_the_third_object)
        with pytest.raises(Interrupted):
            storage_rotation.owner_rotate(user.pk)
    assert sorted(StorageKey.objects.filter(owner_id=user.pk).values_list("version", flat=True)) == [1, 2]

    out = StringIO()
    call_command("storage_keys_rotate", "--all", "--resume", stdout=out)
    assert "6 re-wrapped, 2 already current" in out.getvalue() and "retired [1]" in out.getvalue()
    assert "no user has an old storage key version left" in out.getvalue()
    _assert_everything_opens(user, keys, result, version=2)


def test_commands_refuse_a_process_without_the_key_store(settings):
    settings.AIEMAILY_STORAGE_KMS_CONFIG = None
    for command in (("storage_keys_rotate", "--all"), ("storage_keys_move",), ("storage_kms_rotate",)):
        with pytest.raises(CommandError, match="no storage KMS key or key store"):
            call_command(*command, stdout=StringIO())
    assert settings.AIEMAILY_STORAGE_KMS_CONFIG is None
