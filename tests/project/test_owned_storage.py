"""Object keys begin with the owner id, and reads check the key against the owner asking."""

import uuid

import pytest
from django.core.files.storage import FileSystemStorage

from aiemaily.ownership.storage import ForeignObjectKey, OwnedStorage, owned_key

pytestmark = pytest.mark.claim("owner-scoping")


@pytest.fixture
def store(tmp_path):
    return OwnedStorage(FileSystemStorage(location=tmp_path))


def test_keys_start_with_the_owner_id():
    owner = uuid.uuid4()
    assert owned_key(owner, "messages", "abc.eml") == f"owner/{owner}/messages/abc.eml"


@pytest.mark.parametrize("part", ["..", "a/b", "", "../x", "x\x00", "-dash-first", "a" * 300])
def test_key_parts_cannot_escape_the_prefix(part):
    with pytest.raises(ValueError):
        owned_key(uuid.uuid4(), part)


def test_owner_reads_own_object(store):
    owner = uuid.uuid4()
    key = store.save(owner, ("messages", "m1"), b"hello")
    assert store.read(owner, key) == b"hello"


def test_another_owner_cannot_read_or_delete_it(store):
    owner, stranger = uuid.uuid4(), uuid.uuid4()
    key = store.save(owner, ("messages", "m1"), b"hello")
    with pytest.raises(ForeignObjectKey):
        store.read(stranger, key)
    with pytest.raises(ForeignObjectKey):
        store.delete(stranger, key)
    assert store.read(owner, key) == b"hello"


def test_traversal_out_of_the_prefix_is_refused(store):
    owner, victim = uuid.uuid4(), uuid.uuid4()
    victim_key = store.save(victim, ("messages", "m1"), b"secret")
    sneaky = f"owner/{owner}/../{victim}/messages/m1"
    with pytest.raises(ForeignObjectKey):
        store.read(owner, sneaky)
    assert store.read(victim, victim_key) == b"secret"
