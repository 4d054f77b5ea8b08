"""The vault's keys: the KMS (KEK), the per-user DEK store, the vault's private sealing key.

Everything here runs only in worker-vault. In any other process the settings hold no KMS
configuration, no `vault` database alias and no vault private key, and `require_vault()` raises
VaultNotHere before anything is attempted — there is nothing to fall back to.
"""

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.db import IntegrityError, transaction

from secrets_vault.crypto import SecretBytes, cipher, decode_key, zero
from secrets_vault.kms import KeyEncryptionService, WrappedKey, kms_from_settings
from secrets_vault.models import DataKey

logger = logging.getLogger(__name__)

DEK_SIZE = 32


class VaultNotHere(RuntimeError):
    """This process is not worker-vault: it holds no KEK, no DEK store and no vault private key."""


def require_vault() -> None:
    if (
        settings.AIEMAILY_KMS_CONFIG is None
        or "vault" not in settings.DATABASES
        or not settings.AIEMAILY_VAULT_PRIVATE_KEY
    ):
        raise VaultNotHere("this process cannot decrypt secrets; only worker-vault can")


@lru_cache(maxsize=1)
def kms() -> KeyEncryptionService:
    require_vault()
    return kms_from_settings(settings.AIEMAILY_KMS_CONFIG)


def vault_private_key() -> SecretBytes:
    require_vault()
    return SecretBytes(decode_key(settings.AIEMAILY_VAULT_PRIVATE_KEY))


def dek_context(owner_id, version: int) -> dict[str, str]:
    return {"owner_id": str(owner_id), "purpose": "dek", "version": str(version)}


@dataclass
class _CachedDek:
    key: bytearray
    created: float
    uses: int = 0
    # The key's AES-GCM object, built once: building one costs as much as decrypting a secret. It
    # lives and dies with the entry (OpenSSL cleanses its key schedule when it is freed).
    aead: AESGCM | None = None


@dataclass
class DekCache:
    """Unwrapped DEKs kept briefly so a burst of decryptions costs one KMS call.

    Bounded like the AWS Encryption SDK's caching manager: an entry is dropped after `max_age`
    seconds or `max_uses` uses, whichever comes first, and its bytes are overwritten with zeros
    (as far as Python lets us: the bytearray is ours, copies handed to `cryptography` are not).
    """

    max_age: float
    max_uses: int
    max_entries: int = 10_000
    _entries: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, owner_id, version: int) -> bytes | None:
        with self._lock:  # copied under the lock: an eviction zeroes the bytes
            entry = self._use(owner_id, version)
            return None if entry is None else bytes(entry.key)

    def use(self, owner_id, version: int) -> _CachedDek | None:
        """The live entry (counted as one use), or None: absent, too old or used up (then dropped).
        Its `aead` is the DEK as a ready AES-GCM object (keystore.dek_cipher); an eviction zeroes the
        entry's bytes but leaves `aead` to whoever still holds the entry, until they drop it."""
        with self._lock:
            return self._use(owner_id, version)

    def _use(self, owner_id, version: int) -> _CachedDek | None:
        # Tasks hand the vault ids as strings (JSON); str() of a UUID costs more than the rest here.
        cache_key = (owner_id if type(owner_id) is str else str(owner_id), version)
        entry = self._entries.get(cache_key)
        if entry is None:
            return None
        if time.monotonic() - entry.created > self.max_age or entry.uses >= self.max_uses:
            self._evict(cache_key)
            return None
        entry.uses += 1
        return entry

    def put(self, owner_id, version: int, key: bytes) -> None:
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._evict(next(iter(self._entries)))
            self._entries[(str(owner_id), version)] = _CachedDek(bytearray(key), time.monotonic(),
                                                                 aead=cipher(key))

    def forget_owner(self, owner_id) -> None:
        with self._lock:
            for cache_key in [k for k in self._entries if k[0] == str(owner_id)]:
                self._evict(cache_key)

    def clear(self) -> None:
        with self._lock:
            for cache_key in list(self._entries):
                self._evict(cache_key)

    def _evict(self, cache_key) -> None:
        entry = self._entries.pop(cache_key, None)
        if entry is not None:
            zero(entry.key)


dek_cache = DekCache(max_age=settings.AIEMAILY_DEK_CACHE_SECONDS, max_uses=settings.AIEMAILY_DEK_CACHE_USES)


def _unwrap(row: DataKey) -> bytes:
    wrapped = WrappedKey(ciphertext=bytes(row.wrapped), key_id=row.kek_id, key_version=row.kek_version)
    return kms().unwrap(wrapped, context=dek_context(row.owner_id, row.version))


def _create_dek(owner_id, version: int) -> DataKey:
    key = bytearray(secrets.token_bytes(DEK_SIZE))
    try:
        wrapped = kms().wrap(bytes(key), context=dek_context(owner_id, version))
    finally:
        zero(key)
    return DataKey(owner_id=owner_id, version=version, wrapped=wrapped.ciphertext, kek_id=wrapped.key_id,
                   kek_version=wrapped.key_version, active=True)


def active_dek(owner_id) -> tuple[int, bytes]:
    """The owner's current DEK (created on first use) for new encryptions: (version, key)."""
    require_vault()
    row = DataKey.objects.filter(owner_id=owner_id, active=True).first()
    if row is None:
        try:
            with transaction.atomic(using="vault"):
                last = DataKey.objects.filter(owner_id=owner_id).order_by("-version").first()
                row = _create_dek(owner_id, (last.version + 1) if last else 1)
                row.save(using="vault")
        except IntegrityError:
            # Another vault worker created it at the same moment; theirs is as good as ours.
            row = DataKey.objects.get(owner_id=owner_id, active=True)
    return row.version, dek(owner_id, row.version)


def dek(owner_id, version: int) -> bytes:
    """The owner's DEK of `version`, from the cache or unwrapped by the KMS."""
    require_vault()
    cached = dek_cache.get(owner_id, version)
    if cached is not None:
        return cached
    try:
        row = DataKey.objects.get(owner_id=owner_id, version=version)
    except DataKey.DoesNotExist:
        raise KeyError("no such data key (destroyed, or never existed)") from None
    key = _unwrap(row)
    dek_cache.put(owner_id, version, key)
    return key


def dek_cipher(owner_id, version: int) -> AESGCM:
    """The owner's DEK of `version` as a ready AES-GCM object (crypto.decrypt_with_cipher), from the
    cache or unwrapped by the KMS: the decrypt path's form of dek()."""
    require_vault()
    entry = dek_cache.use(owner_id, version)
    # A miss goes through dek(): a KMS unwrap (which also fills the cache) dwarfs building one more.
    return entry.aead if entry is not None else cipher(dek(owner_id, version))


def rotate_dek(owner_id) -> int:
    """Start a new DEK version for the owner; the old one stays until nothing uses it."""
    require_vault()
    with transaction.atomic(using="vault"):
        current = DataKey.objects.select_for_update().filter(owner_id=owner_id, active=True).first()
        next_version = (DataKey.objects.filter(owner_id=owner_id).order_by("-version").first().version + 1
                        if current else 1)
        if current:
            current.active = False
            current.save(update_fields=["active"], using="vault")
        row = _create_dek(owner_id, next_version)
        row.save(using="vault")
    return next_version


def retire_dek(owner_id, version: int) -> None:
    """Destroy an inactive DEK version once no secret is encrypted under it (caller checks)."""
    require_vault()
    DataKey.objects.filter(owner_id=owner_id, version=version, active=False).delete()
    dek_cache.forget_owner(owner_id)


def shred_owner(owner_id) -> int:
    """Crypto-shredding: destroy every DEK of the owner. Their ciphertexts become noise."""
    require_vault()
    dek_cache.forget_owner(owner_id)
    deleted, _ = DataKey.objects.filter(owner_id=owner_id).delete()
    return deleted


def rewrap_all(batch_size: int = 200, progress=None) -> dict[str, int]:
    """Re-wrap every DEK made under an older KEK version with the current one.

    Idempotent and resumable: each row is re-wrapped in its own short transaction with a row lock,
    and rows already on the current version are skipped, so an interrupted run just runs again.
    """
    require_vault()
    service = kms()
    current = service.key_version  # read once: on AWS each read is a DescribeKey call
    done = skipped = 0
    total = DataKey.objects.exclude(kek_version=current).count()
    while True:
        ids = list(
            DataKey.objects.exclude(kek_version=current).order_by("id").values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            break
        for row_id in ids:
            with transaction.atomic(using="vault"):
                row = DataKey.objects.select_for_update().get(id=row_id)
                if row.kek_version == current:
                    skipped += 1
                    continue
                wrapped = WrappedKey(bytes(row.wrapped), row.kek_id, row.kek_version)
                fresh = service.rewrap(wrapped, context=dek_context(row.owner_id, row.version))
                row.wrapped, row.kek_id, row.kek_version = fresh.ciphertext, fresh.key_id, fresh.key_version
                row.save(update_fields=["wrapped", "kek_id", "kek_version"], using="vault")
                done += 1
        if progress:
            progress(done, total)
    return {"rewrapped": done, "skipped": skipped, "total": total}


def kek_versions_in_use() -> set[int]:
    require_vault()
    return set(DataKey.objects.values_list("kek_version", flat=True).distinct())
