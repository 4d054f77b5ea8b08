"""The vault: sealed on arrival, stored under a per-user DEK wrapped by the KEK, leased to sync,
rotated, shredded, audited. Runs in-process with every role; test_vault_isolation.py runs each
role as its own process."""

import base64
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connections

from aiemaily.ownership.binding import owner_scope
from secrets_vault import crypto, keystore, services, vault_services
from secrets_vault.crypto import SecretStr
from secrets_vault.models import AuditEvent, DataKey, Secret
from secrets_vault.sealing import LeaseError, lease_open
from secrets_vault.vault_services import VaultRefusal
from tests.harness.factories import UserFactory, stored_secret

pytestmark = [pytest.mark.django_db(databases=["default", "vault"]), pytest.mark.claim("envelope-encryption")]

CANARY = "Canary-Imap-Password-7f3a"


@pytest.fixture(autouse=True)
def _fresh_dek_cache():
    keystore.dek_cache.clear()
    yield
    keystore.dek_cache.clear()


def _lease(owner, secret, connection_id="conn-1", purpose="imap_password", **kwargs):
    with vault_services.audited_refusals(owner.pk), owner_scope(owner):
        return vault_services.secret_lease(owner_id=owner.pk, secret_id=secret.pk, connection_id=connection_id,
                                     purpose=purpose, **kwargs).as_message()


def _reveal(owner, secret, **kwargs):
    lease = _lease(owner, secret, **kwargs)
    return lease_open(lease, owner_id=owner.pk, connection_id="conn-1", purpose="imap_password").reveal()


def _actions(owner):
    with owner_scope(owner):
        return [e.action for e in AuditEvent.objects.for_owner(owner).order_by("created_at")]


def test_web_seals_on_arrival_and_the_row_holds_no_plaintext():
    owner = UserFactory()
    with owner_scope(owner):
        secret = services.secret_submit(owner=owner, purpose="imap_password", value=SecretStr(CANARY))
        row = Secret.objects.for_owner(owner).get(pk=secret.pk)
    assert row.state == "pending" and row.ciphertext is None
    assert CANARY.encode() not in bytes(row.sealed)


def test_store_then_lease_round_trip():
    owner = UserFactory()
    secret = stored_secret(owner, CANARY)
    assert secret.state == "stored" and secret.sealed is None and secret.dek_version == 1
    assert CANARY.encode() not in bytes(secret.ciphertext)
    assert _reveal(owner, secret) == CANARY
    assert _actions(owner) == ["store", "store", "lease"]


def test_the_dek_is_in_the_vault_database_and_never_beside_the_ciphertext():
    owner = UserFactory()
    stored_secret(owner)
    assert DataKey.objects.filter(owner_id=owner.pk).count() == 1
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT to_regclass('secrets_vault_datakey')")
        assert cursor.fetchone()[0] is None
    with connections["vault"].cursor() as cursor:
        cursor.execute("SELECT to_regclass('secrets_vault_secret')")
        assert cursor.fetchone()[0] is None


def test_each_user_has_their_own_dek():
    alice, bob = UserFactory(), UserFactory()
    stored_secret(alice)
    stored_secret(bob)
    keys = {row.owner_id: bytes(row.wrapped) for row in DataKey.objects.filter(owner_id__in=[alice.pk, bob.pk])}
    assert len(keys) == 2 and keys[alice.pk] != keys[bob.pk]
    assert keystore.dek(alice.pk, 1) != keystore.dek(bob.pk, 1)


def test_a_lease_opens_only_for_its_connection_purpose_and_owner():
    owner, other = UserFactory(), UserFactory()
    lease = _lease(owner, stored_secret(owner, CANARY))
    for kwargs in ({"owner_id": owner.pk, "connection_id": "conn-2", "purpose": "imap_password"},
                   {"owner_id": owner.pk, "connection_id": "conn-1", "purpose": "smtp_password"},
                   {"owner_id": other.pk, "connection_id": "conn-1", "purpose": "imap_password"}):
        with pytest.raises(LeaseError):
            lease_open(lease, **kwargs)


def test_an_expired_lease_does_not_open():
    owner = UserFactory()
    lease = _lease(owner, stored_secret(owner), ttl_seconds=0)
    with pytest.raises(LeaseError, match="expired"):
        lease_open(lease, owner_id=owner.pk, connection_id="conn-1", purpose="imap_password")


def test_extending_a_lease_by_editing_its_expiry_fails():
    owner = UserFactory()
    lease = _lease(owner, stored_secret(owner), ttl_seconds=1)
    lease["expires_at"] = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    with pytest.raises(LeaseError, match="does not open"):
        lease_open(lease, owner_id=owner.pk, connection_id="conn-1", purpose="imap_password")


def test_a_tampered_lease_does_not_open():
    owner = UserFactory()
    lease = _lease(owner, stored_secret(owner))
    sealed = bytearray(base64.b64decode(lease["sealed"]))
    sealed[-5] ^= 1
    lease["sealed"] = base64.b64encode(bytes(sealed)).decode()
    with pytest.raises(LeaseError):
        lease_open(lease, owner_id=owner.pk, connection_id="conn-1", purpose="imap_password")


def test_a_lease_for_the_wrong_purpose_is_refused_and_audited():
    owner = UserFactory()
    secret = stored_secret(owner, purpose="smtp_password")
    with pytest.raises(VaultRefusal, match="another purpose"):
        _lease(owner, secret, purpose="imap_password")
    assert _actions(owner)[-1] == "refused"


def test_corrupted_ciphertext_is_refused_audited_and_nothing_is_lost():
    owner = UserFactory()
    secret = stored_secret(owner)
    corrupted = bytearray(secret.ciphertext)
    corrupted[-1] ^= 0x80
    with owner_scope(owner):
        Secret.objects.for_owner(owner).filter(pk=secret.pk).update(ciphertext=bytes(corrupted))
    with pytest.raises(VaultRefusal, match="did not open"):
        _lease(owner, secret)
    assert _actions(owner)[-1] == "refused"
    with owner_scope(owner):
        assert Secret.objects.for_owner(owner).filter(pk=secret.pk).exists()


def test_ciphertext_copied_to_another_owners_row_does_not_open():
    alice, mallory = UserFactory(), UserFactory()
    alices = stored_secret(alice, CANARY)
    mallorys = stored_secret(mallory, "mallory's own")
    with owner_scope(mallory):
        Secret.objects.for_owner(mallory).filter(pk=mallorys.pk).update(
            ciphertext=bytes(alices.ciphertext), dek_version=alices.dek_version)
    with pytest.raises(VaultRefusal):
        _lease(mallory, mallorys)


def test_ciphertext_moved_to_another_secret_of_the_same_owner_does_not_open():
    owner = UserFactory()
    first, second = stored_secret(owner, CANARY), stored_secret(owner, "other")
    with owner_scope(owner):
        Secret.objects.for_owner(owner).filter(pk=second.pk).update(ciphertext=bytes(first.ciphertext))
    with pytest.raises(VaultRefusal):
        _lease(owner, second)


def test_an_unknown_dek_version_is_a_clear_error():
    owner = UserFactory()
    secret = stored_secret(owner)
    with owner_scope(owner):
        Secret.objects.for_owner(owner).filter(pk=secret.pk).update(dek_version=9)
    with pytest.raises(VaultRefusal, match="data key"):
        _lease(owner, secret)


def test_a_sealed_value_replayed_into_another_row_is_refused():
    owner = UserFactory()
    with owner_scope(owner):
        first = services.secret_submit(owner=owner, purpose="imap_password", value=SecretStr(CANARY))
        second = services.secret_submit(owner=owner, purpose="imap_password", value=SecretStr("x"))
        Secret.objects.for_owner(owner).filter(pk=second.pk).update(sealed=bytes(first.sealed))
        stored = vault_services.secret_store_sealed(owner_id=owner.pk, secret_id=second.pk)
    assert stored.state == "failed" and stored.ciphertext is None and stored.sealed is None


def test_the_dek_cache_saves_kms_calls_and_is_bounded(monkeypatch):
    owner = UserFactory()
    secret = stored_secret(owner)
    keystore.dek_cache.clear()
    calls = []
    real_unwrap = keystore.kms().unwrap
    monkeypatch.setattr(keystore.kms(), "unwrap", lambda *a, **k: calls.append(1) or real_unwrap(*a, **k))
    monkeypatch.setattr(keystore.dek_cache, "max_uses", 3)
    for _ in range(7):
        _reveal(owner, secret)
    # 1 unwrap, then 3 cached uses, then an unwrap again, and 3 more cached uses.
    assert len(calls) == 2


def test_evicted_cache_entries_are_zeroed():
    cache = keystore.DekCache(max_age=0, max_uses=10)
    cache.put("o", 1, b"k" * 32)
    entry = cache._entries[("o", 1)]
    assert cache.get("o", 1) is None  # max_age 0: already stale
    assert bytes(entry.key) == b"\x00" * 32


def test_the_cached_cipher_keeps_the_cache_bounds_and_the_checks():
    """keystore.dek_cipher's entry: the same use count as the bytes, the same owner whether the id
    comes as a UUID or (from a task) a string, and decrypt()'s checks on what it opens."""
    cache = keystore.DekCache(max_age=60, max_uses=2)
    owner, key = uuid.uuid4(), b"k" * 32
    cache.put(owner, 1, key)
    blob = crypto.encrypt(key, b"secret", aad=b"ctx", key_version=1)
    entry = cache.use(str(owner), 1)
    assert crypto.decrypt_with_cipher(entry.aead, blob, aad=b"ctx") == b"secret"
    assert cache.use(owner, 1) is not None
    assert cache.use(owner, 1) is None  # used up: dropped and zeroed
    assert bytes(entry.key) == b"\x00" * 32
    for bad_blob, aad in ((blob[:-1] + bytes([blob[-1] ^ 1]), b"ctx"), (blob, b"other"), (blob[:20], b"ctx"),
                          (b"\x02" + blob[1:], b"ctx")):
        with pytest.raises(crypto.CiphertextError):
            crypto.decrypt_with_cipher(entry.aead, bad_blob, aad=aad)
    with pytest.raises(TypeError):
        crypto.decrypt_with_cipher(entry.aead, blob, aad="ctx")


def test_dek_rotation_reencrypts_and_destroys_the_old_key():
    owner = UserFactory()
    secrets = [stored_secret(owner, f"value-{n}") for n in range(3)]
    with owner_scope(owner):
        moved = vault_services.secret_reencrypt_owner(owner_id=owner.pk)
    assert moved == 3
    assert list(DataKey.objects.filter(owner_id=owner.pk).values_list("version", "active")) == [(2, True)]
    for n, secret in enumerate(secrets):
        assert _reveal(owner, secret) == f"value-{n}"
    assert "rotate" in _actions(owner)


def test_an_interrupted_dek_rotation_resumes():
    owner = UserFactory()
    secret = stored_secret(owner, CANARY)
    keystore.rotate_dek(owner.pk)  # the "crash": a new version exists, nothing re-encrypted yet
    assert _reveal(owner, secret) == CANARY  # still readable under v1 meanwhile
    with owner_scope(owner):
        vault_services.secret_reencrypt_owner(owner_id=owner.pk)
    with owner_scope(owner):
        assert Secret.objects.for_owner(owner).get(pk=secret.pk).dek_version == 3
    assert list(DataKey.objects.filter(owner_id=owner.pk).values_list("version", flat=True)) == [3]
    assert _reveal(owner, secret) == CANARY


def test_kek_rotation_rewraps_every_dek_idempotently():
    owners = [UserFactory() for _ in range(3)]
    secrets = [stored_secret(owner, f"v{n}") for n, owner in enumerate(owners)]
    old_version = keystore.kms().key_version
    new_version = keystore.kms().rotate()
    assert new_version > old_version
    keystore.dek_cache.clear()
    result = keystore.rewrap_all(batch_size=2)
    assert result["rewrapped"] >= 3
    assert keystore.kek_versions_in_use() == {new_version}
    assert keystore.rewrap_all()["rewrapped"] == 0
    keystore.dek_cache.clear()
    for n, (owner, secret) in enumerate(zip(owners, secrets, strict=True)):
        assert _reveal(owner, secret) == f"v{n}"


@pytest.mark.claim("no-plaintext-leaks")
def test_shredding_makes_leftover_ciphertext_unopenable():
    owner = UserFactory()
    secret = stored_secret(owner, CANARY)
    leftover = bytes(secret.ciphertext)
    wrapped_before = list(DataKey.objects.filter(owner_id=owner.pk).values_list("wrapped", flat=True))
    with owner_scope(owner):
        assert vault_services.owner_shred(owner_id=owner.pk) == 1
    assert not DataKey.objects.filter(owner_id=owner.pk).exists()
    assert wrapped_before  # the DEK existed, and now no copy of it is reachable
    with pytest.raises(KeyError):
        keystore.dek(owner.pk, 1)
    with owner_scope(owner):
        assert bytes(Secret.objects.for_owner(owner).get(pk=secret.pk).ciphertext) == leftover
    with pytest.raises(VaultRefusal, match="data key destroyed"):
        _lease(owner, secret)
    assert _actions(owner)[-2:] == ["shred", "refused"]


def test_secret_repr_never_shows_material():
    owner = UserFactory()
    secret = stored_secret(owner, CANARY)
    assert CANARY not in repr(secret) and "ciphertext" not in repr(secret)
    assert "****" in repr(SecretStr(CANARY)) and CANARY not in f"{SecretStr(CANARY)}"
