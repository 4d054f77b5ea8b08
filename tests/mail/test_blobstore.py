"""Encrypted object storage on both backends: local files and S3 (moto's server, real wire protocol)."""

import boto3
import pytest

from aiemaily.ownership.binding import owner_scope
from mail import blobstore
from tests.harness.factories import UserFactory
from tests.harness.kms_fixtures import moto_server

pytestmark = [pytest.mark.django_db, pytest.mark.claim("per-object-keys")]

BODY = b"From: a@example.test\r\nSubject: secret plans\r\n\r\nThe plaintext body of a message.\r\n"


@pytest.fixture(scope="module")
def s3_endpoint():
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def backend(request, settings, tmp_path, monkeypatch):
    blobstore._storage.cache_clear()
    blobstore.key_cache.clear()
    if request.param == "local":
        settings.AIEMAILY_STORAGE = "local"
        settings.AIEMAILY_OBJECTS_DIR = tmp_path / "objects"

        def raw(key):
            return (tmp_path / "objects" / key).read_bytes()

        def write(key, data):
            (tmp_path / "objects" / key).write_bytes(data)
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                            ("AWS_DEFAULT_REGION", "us-east-1")):
            monkeypatch.setenv(name, value)
        bucket = f"aiemaily-{tmp_path.name.lower().replace('_', '-')[:40]}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        settings.AIEMAILY_STORAGE, settings.AIEMAILY_S3_BUCKET, settings.AIEMAILY_S3_ENDPOINT = "s3", bucket, endpoint

        def raw(key):
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()

        def write(key, data):
            client.put_object(Bucket=bucket, Key=key, Body=data)
    yield request.param, raw, write
    blobstore._storage.cache_clear()
    blobstore.key_cache.clear()


def test_round_trip_and_no_plaintext_at_rest(backend):
    _, raw, _ = backend
    owner = UserFactory()
    with owner_scope(owner):
        key = blobstore.put(owner.pk, ("messages", "c1", "m1"), BODY)
        assert key.startswith(f"owner/{owner.pk}/")
        assert blobstore.get(owner.pk, key) == BODY
    stored = raw(key)
    assert b"secret plans" not in stored and b"plaintext body" not in stored


def test_the_same_body_twice_gives_different_ciphertexts(backend):
    _, raw, _ = backend
    owner = UserFactory()
    with owner_scope(owner):
        first = blobstore.put(owner.pk, ("messages", "c1", "a"), BODY)
        second = blobstore.put(owner.pk, ("messages", "c1", "b"), BODY)
    assert raw(first) != raw(second)


def test_a_tampered_object_is_a_clear_error(backend):
    _, raw, write = backend
    owner = UserFactory()
    with owner_scope(owner):
        key = blobstore.put(owner.pk, ("messages", "c1", "m1"), BODY)
    data = bytearray(raw(key))
    data[len(data) // 2] ^= 0x01
    write(key, bytes(data))
    with owner_scope(owner), pytest.raises(blobstore.BlobError, match="failed authentication"):
        blobstore.get(owner.pk, key)


def test_a_blob_copied_into_another_owners_path_fails_to_open(backend):
    _, raw, write = backend
    alice, mallory = UserFactory(), UserFactory()
    with owner_scope(alice):
        alices = blobstore.put(alice.pk, ("messages", "c1", "m1"), BODY)
    with owner_scope(mallory):
        mallorys = blobstore.put(mallory.pk, ("messages", "c9", "m9"), b"mallory's own")
    write(mallorys, raw(alices))
    with owner_scope(mallory), pytest.raises(blobstore.BlobError):
        blobstore.get(mallory.pk, mallorys)
    with owner_scope(mallory), pytest.raises(blobstore.BlobError, match="not belong"):
        blobstore.get(mallory.pk, alices)


def test_a_missing_object_is_a_clear_error(backend):
    owner = UserFactory()
    with owner_scope(owner), pytest.raises(blobstore.BlobError, match="missing"):
        blobstore.get(owner.pk, f"owner/{owner.pk}/messages/none")


def test_deleting_an_owners_objects_leaves_others(backend):
    alice, bob = UserFactory(), UserFactory()
    with owner_scope(alice):
        keys = [blobstore.put(alice.pk, ("messages", "c1", f"m{n}"), BODY) for n in range(3)]
    with owner_scope(bob):
        bobs = blobstore.put(bob.pk, ("messages", "c2", "m1"), BODY)
    assert blobstore.delete_owner(alice.pk) == 3
    with owner_scope(alice), pytest.raises(blobstore.BlobError):
        blobstore.get(alice.pk, keys[0])
    with owner_scope(bob):
        assert blobstore.get(bob.pk, bobs) == BODY


def test_deleting_one_connections_mail_leaves_the_rest(backend):
    owner = UserFactory()
    with owner_scope(owner):
        first = blobstore.put(owner.pk, ("messages", "c1", "m1"), BODY)
        second = blobstore.put(owner.pk, ("messages", "c2", "m1"), BODY)
    assert blobstore.delete_owner(owner.pk, "messages", "c1") == 1
    with owner_scope(owner):
        assert blobstore.get(owner.pk, second) == BODY
        with pytest.raises(blobstore.BlobError):
            blobstore.get(owner.pk, first)
