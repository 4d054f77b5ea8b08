"""Message bodies as encrypted objects: one random key per object, wrapped by a per-user storage
key, itself wrapped by the storage KMS key (distinct from the credentials KEK).

    object = len(wrapped object key) (2 bytes) | wrapped object key | AES-256-GCM(object key, body)

Associated data binds both layers to the owner id and the object key (its path), so an object
copied under another owner's prefix, or to another path, does not open. A copy of the object store
yields nothing without the KMS. Keys are `owner/<owner id>/…` and reads check the prefix first.
"""

import os
import struct
import threading
import time
from functools import lru_cache

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage
from django.db import IntegrityError, transaction

from aiemaily.ownership.binding import owner_scope
from aiemaily.ownership.storage import ForeignObjectKey, OwnedStorage, owned_key, owner_prefix
from secrets_vault.crypto import CiphertextError, canonical_aad, decrypt, encrypt, parse_header, zero
from secrets_vault.kms import WrappedKey, kms_from_settings
from secrets_vault.models import StorageKey

_LEN = struct.Struct(">H")


class BlobError(Exception):
    """An object that is missing, tampered with, or not this owner's. Never includes content."""


@lru_cache(maxsize=1)
def _storage() -> Storage:
    if settings.AIEMAILY_STORAGE == "s3":
        from storages.backends.s3 import S3Storage  # start-up cost: only when S3 is configured

        return S3Storage(bucket_name=settings.AIEMAILY_S3_BUCKET, endpoint_url=settings.AIEMAILY_S3_ENDPOINT,
                         file_overwrite=True, default_acl=None, querystring_auth=False)
    settings.AIEMAILY_OBJECTS_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    return LocalObjectStorage(location=settings.AIEMAILY_OBJECTS_DIR, file_permissions_mode=0o600,
                              directory_permissions_mode=0o700)


class LocalObjectStorage(FileSystemStorage):
    """FileSystemStorage with a direct write path: Django's save() costs ~3 ms per file (existence
    checks, renaming, locking), which dominated an initial sync. Objects are immutable and their
    keys unique, and a partial file left by a crash is overwritten by the re-sync (its database row
    is written only after the object)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._made: set[str] = set()

    def write_object(self, name: str, data: bytes) -> None:
        path = self.path(name)
        parent = os.path.dirname(path)
        if parent not in self._made:
            os.makedirs(parent, mode=0o700, exist_ok=True)
            self._made.add(parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked (a signal, a full pipe-like target)
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)


def objects() -> OwnedStorage:
    return OwnedStorage(_storage())


@lru_cache(maxsize=1)
def storage_kms():
    if settings.AIEMAILY_STORAGE_KMS_CONFIG is None:
        raise BlobError("this process has no access to the storage key")
    return kms_from_settings(settings.AIEMAILY_STORAGE_KMS_CONFIG)


class _KeyCache:
    """Unwrapped per-user storage keys, bounded in age; zeroed when dropped."""

    def __init__(self):
        self._entries: dict = {}
        self._active: dict = {}
        self._lock = threading.Lock()

    def active_version(self, owner_id):
        entry = self._active.get(str(owner_id))
        if entry and time.monotonic() - entry[1] < settings.AIEMAILY_STORAGE_KEY_CACHE_SECONDS:
            return entry[0]
        return None

    def set_active(self, owner_id, version):
        with self._lock:
            if len(self._active) > 10_000:
                self._active.clear()
            self._active[str(owner_id)] = (version, time.monotonic())

    def get(self, owner_id, version):
        with self._lock:
            entry = self._entries.get((str(owner_id), version))
            if entry and time.monotonic() - entry[1] < settings.AIEMAILY_STORAGE_KEY_CACHE_SECONDS:
                return bytes(entry[0])
            if entry:
                zero(self._entries.pop((str(owner_id), version))[0])
            return None

    def put(self, owner_id, version, key: bytes):
        with self._lock:
            if len(self._entries) > 10_000:
                for cache_key in list(self._entries)[:1000]:
                    zero(self._entries.pop(cache_key)[0])
            self._entries[(str(owner_id), version)] = (bytearray(key), time.monotonic())

    def forget_owner(self, owner_id):
        with self._lock:
            for cache_key in [k for k in self._entries if k[0] == str(owner_id)]:
                zero(self._entries.pop(cache_key)[0])
            self._active.pop(str(owner_id), None)

    def clear(self):
        with self._lock:
            for entry in self._entries.values():
                zero(entry[0])
            self._entries.clear()
            self._active.clear()


key_cache = _KeyCache()


def storage_key_context(owner_id, version) -> dict[str, str]:
    """The storage KMS wrapping context of a user's storage key: a row copied to another owner or
    version does not unwrap."""
    return {"owner_id": str(owner_id), "purpose": "storage", "version": str(version)}


def _user_key(owner_id, version: int | None = None) -> tuple[int, bytes]:
    """The owner's storage key (the active one, created on first use, unless `version` is given).

    Cached by version, and the active version is remembered too, so a sync of thousands of messages
    costs one key-store read and one KMS unwrap, not one per message.
    """
    lookup = version if version is not None else key_cache.active_version(owner_id)
    if lookup is not None:
        cached = key_cache.get(owner_id, lookup)
        if cached is not None:
            return lookup, cached
    row = _user_key_row(owner_id, version)
    if version is None:
        key_cache.set_active(owner_id, row.version)
    cached = key_cache.get(owner_id, row.version)
    if cached is not None:
        return row.version, cached
    key = storage_kms().unwrap(WrappedKey(bytes(row.wrapped), row.kek_id, row.kek_version),
                               context=storage_key_context(owner_id, row.version))
    key_cache.put(owner_id, row.version, key)
    return row.version, key


def _user_key_row(owner_id, version: int | None):
    """The owner's storage-key row in the key store (the `keys` database, never the main one)."""
    query = StorageKey.objects.filter(owner_id=owner_id)
    row = query.filter(version=version).first() if version is not None else query.filter(active=True).first()
    if row is not None:
        return row
    if legacy_keys_move(owner_id):  # kept in the main database by an older release: move, then use
        return _user_key_row(owner_id, version)
    if version is not None:
        raise BlobError("the storage key of this object no longer exists")
    last = query.order_by("-version").first()
    next_version = last.version + 1 if last else 1
    raw = bytearray(os.urandom(32))
    try:
        wrapped = storage_kms().wrap(bytes(raw), context=storage_key_context(owner_id, next_version))
        with transaction.atomic(using="keys"):
            return StorageKey.objects.create(owner_id=owner_id, version=next_version, wrapped=wrapped.ciphertext,
                                             kek_id=wrapped.key_id, kek_version=wrapped.key_version)
    except IntegrityError:
        return query.get(active=True)  # created concurrently by another worker
    finally:
        zero(raw)


def legacy_keys_move(owner_id) -> int:
    """Move the owner's storage keys from the main database (where releases before the key store
    kept them) into the key store, then delete them there. Idempotent: a row already in the key
    store is kept as it is, and the main database's copy goes either way."""
    # At call time: mail.models imports this module (through mail.metadata) while Django loads the app.
    from mail.models import LegacyStorageKey

    with owner_scope(owner_id):
        rows = list(LegacyStorageKey.objects.for_owner(owner_id).order_by("version"))
        if not rows:
            return 0
        with transaction.atomic(using="keys"):
            for row in rows:
                StorageKey.objects.get_or_create(
                    owner_id=owner_id, version=row.version,
                    defaults={"wrapped": bytes(row.wrapped), "kek_id": row.kek_id, "kek_version": row.kek_version,
                              "active": row.active, "created_at": row.created_at})
        # The key store has committed; only now does the main database's copy go.
        LegacyStorageKey.objects.for_owner(owner_id).filter(pk__in=[r.pk for r in rows]).delete()
    return len(rows)


def storage_keys_shred(owner_id) -> int:
    """Crypto-shredding of bodies and metadata: destroy every storage key of the owner. Whatever
    copy of their objects or sealed columns survives (a backup) is noise from then on."""
    legacy_keys_move(owner_id)  # a key still in the main database is destroyed like the others
    with transaction.atomic(using="keys"):
        deleted, _ = StorageKey.objects.filter(owner_id=owner_id).delete()
    key_cache.forget_owner(owner_id)
    return deleted


def _aad(owner_id, key: str, layer: str) -> bytes:
    return canonical_aad({"owner_id": str(owner_id), "object": key, "layer": layer})


def put(owner_id, parts: tuple[str, ...], data: bytes) -> str:
    """Encrypt and store `data` under owner/<owner id>/<parts…>; returns the object key."""

    key = owned_key(owner_id, *parts)
    version, user_key = _user_key(owner_id)
    object_key = bytearray(os.urandom(32))
    try:
        wrapped = encrypt(user_key, bytes(object_key), aad=_aad(owner_id, key, "key"), key_version=version)
        body = encrypt(bytes(object_key), data, aad=_aad(owner_id, key, "body"), key_version=0)
    finally:
        zero(object_key)
    objects().save(owner_id, parts, _LEN.pack(len(wrapped)) + wrapped + body)
    return key


def seal_field(owner_id, name: str, data: bytes) -> bytes:
    """Encrypt a small value kept in a database column (an AI summary or draft) exactly like an
    object: its own random key, wrapped by the owner's storage key. `name` (e.g. ai/<row id>/text)
    is bound into the associated data, so a value copied to another row or owner does not open."""
    key = owned_key(owner_id, *name.split("/"))
    version, user_key = _user_key(owner_id)
    object_key = bytearray(os.urandom(32))
    try:
        wrapped = encrypt(user_key, bytes(object_key), aad=_aad(owner_id, key, "key"), key_version=version)
        body = encrypt(bytes(object_key), data, aad=_aad(owner_id, key, "body"), key_version=0)
    finally:
        zero(object_key)
    return _LEN.pack(len(wrapped)) + wrapped + body


def open_field(owner_id, name: str, blob: bytes) -> bytes:
    """The inverse of seal_field; anything tampered, moved or shredded raises BlobError."""
    key = owned_key(owner_id, *name.split("/"))
    try:
        (length,) = _LEN.unpack_from(blob, 0)
        wrapped, body = blob[2:2 + length], blob[2 + length:]

        user_key = _user_key(owner_id, parse_header(wrapped).key_version)[1]
        object_key = decrypt(user_key, wrapped, aad=_aad(owner_id, key, "key"))
        return decrypt(object_key, body, aad=_aad(owner_id, key, "body"))
    except (CiphertextError, struct.error, ValueError):
        raise BlobError("value failed authentication (tampered, moved, or not this owner's)") from None


def get(owner_id, key: str, *, delegate=None) -> bytes:
    """Read and decrypt an object of this owner; anything else raises BlobError.

    `delegate`: the user the caller acts for is not the owner but a delegate. The owner's storage
    key is then used only for an object of a message in a thread a live grant hands to that
    delegate (checked here, in the database, on every read), never for the owner's other objects.
    """
    if delegate is not None and not _shared_with(delegate, owner_id, key):
        raise BlobError("this object is not shared with you")
    try:
        blob = objects().read(owner_id, key)
    except ForeignObjectKey:
        raise BlobError("object does not belong to this owner") from None
    except (FileNotFoundError, OSError):
        raise BlobError("object is missing") from None
    try:
        (length,) = _LEN.unpack_from(blob, 0)
        wrapped, body = blob[2:2 + length], blob[2 + length:]

        user_key = _user_key(owner_id, parse_header(wrapped).key_version)[1]
        object_key = decrypt(user_key, wrapped, aad=_aad(owner_id, key, "key"))
        return decrypt(object_key, body, aad=_aad(owner_id, key, "body"))
    except (CiphertextError, struct.error):
        raise BlobError("object failed authentication (tampered, moved, or not this owner's)") from None


def _shared_with(delegate, owner_id, key: str) -> bool:
    """Is `key` the stored copy of a message of `owner_id` in a thread delegated to `delegate`?
    (The manager path filters by the live grant; on PostgreSQL, RLS checks it again.)"""
    # At call time: mail.models imports this module (through mail.metadata) while Django loads the app.
    from mail.models import Message

    return Message.objects.delegated_to(delegate).filter(owner_id=owner_id, blob_key=key).exists()


def delete(owner_id, key: str) -> None:
    objects().delete(owner_id, key)


def delete_owner(owner_id, *parts: str) -> int:
    """Delete every object under owner/<owner id>/<parts…> (account deletion, 'delete synced mail')."""
    storage, count = _storage(), 0
    prefix = owned_key(owner_id, *parts) if parts else owner_prefix(owner_id).rstrip("/")
    stack = [prefix]
    while stack:
        folder = stack.pop()
        try:
            dirs, files = storage.listdir(folder)
        except FileNotFoundError:
            continue
        for name in files:
            storage.delete(f"{folder}/{name}")
            count += 1
        stack.extend(f"{folder}/{d}" for d in dirs)
    return count
