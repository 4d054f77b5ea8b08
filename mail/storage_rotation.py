"""Maintenance of the storage keys of message bodies and metadata (mail/blobstore.py): moving them
out of the main database, re-wrapping them under a new storage KMS key version, and rotating a
user's storage key. Run by the management commands storage_keys_move, storage_kms_rotate and
storage_keys_rotate with a mail zone's configuration (the storage KMS key and the key store).

Each step works on one row or object at a time and skips what is already done, so an interrupted
run is simply run again.
"""

import os
import struct

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from aiemaily.ownership.binding import owner_scope
from mail import blobstore
from mail.assistant.models import AiResult, field_name
from mail.metadata_keys import MetadataKey, sealed_name
from mail.models import LegacyStorageKey
from secrets_vault.crypto import CiphertextError, decrypt, encrypt, parse_header, zero
from secrets_vault.kms import WrappedKey
from secrets_vault.models import StorageKey

_LEN = struct.Struct(">H")


# --- storage keys kept in the main database by releases before the key store ----------------------

def legacy_owners() -> list:
    """Owners with a storage key still in the main database (needs the maintenance role)."""
    return list(LegacyStorageKey.objects.unscoped(reason="storage_keys_move: owners with a legacy storage key")
                .values_list("owner_id", flat=True).distinct().order_by("owner_id"))


def legacy_move_all(progress=None) -> int:
    owners, moved = legacy_owners(), 0
    for number, owner_id in enumerate(owners, 1):
        count = blobstore.legacy_keys_move(owner_id)
        moved += count
        if progress:
            progress(number, len(owners), owner_id, count)
    return moved


# --- a new storage KMS key version: re-wrap every user's storage key ------------------------------

def rewrap_all(batch_size: int = 200, progress=None) -> dict[str, int]:
    """Re-wrap every storage key made under an older storage KMS key version with the current one.

    Like the vault's KEK rotation (secrets_vault.keystore.rewrap_all): each row in its own short
    transaction under a row lock, rows already current skipped.
    """
    service = blobstore.storage_kms()
    current = service.key_version
    done = skipped = 0
    pending = StorageKey.objects.exclude(kek_version=current)
    total = pending.count()
    while True:
        ids = list(pending.order_by("id").values_list("id", flat=True)[:batch_size])
        if not ids:
            break
        for row_id in ids:
            with transaction.atomic(using="keys"):
                row = StorageKey.objects.select_for_update().get(id=row_id)
                if row.kek_version == current:
                    skipped += 1
                    continue
                fresh = service.rewrap(WrappedKey(bytes(row.wrapped), row.kek_id, row.kek_version),
                                       context=blobstore.storage_key_context(row.owner_id, row.version))
                row.wrapped, row.kek_id, row.kek_version = fresh.ciphertext, fresh.key_id, fresh.key_version
                row.save(update_fields=["wrapped", "kek_id", "kek_version"])
                done += 1
        if progress:
            progress(done, total)
    return {"rewrapped": done, "skipped": skipped, "total": total}


def kms_versions_in_use() -> set[int]:
    return set(StorageKey.objects.values_list("kek_version", flat=True).distinct())


# --- a user's storage key: a new version, every object key re-wrapped, the old version destroyed --

def sealed_columns(owner_id):
    """Every database value sealed under the owner's storage key: (model, pk, column, field name).
    A new sealed column must be listed here, or rotation would keep its old key alive forever."""
    for row in AiResult.objects.for_owner(owner_id).only("pk", "text_ct", "instruction_ct"):
        for column, name in (("text_ct", "text"), ("instruction_ct", "instruction")):
            if getattr(row, column):
                yield AiResult, row.pk, column, field_name(row.pk, name)
    yield from metadata_sealed_columns(owner_id)


def metadata_sealed_columns(owner_id):
    """The metadata keys (mail/metadata_keys.py): message columns and index hashes are under them,
    so re-wrapping these two small rows is all a storage-key rotation needs for metadata."""
    for pk, purpose, version in MetadataKey.objects.for_owner(owner_id).values_list("pk", "purpose", "version"):
        yield MetadataKey, pk, "key_ct", sealed_name(purpose, version)


def owners() -> list:
    return list(StorageKey.objects.values_list("owner_id", flat=True).distinct().order_by("owner_id"))


def owner_rotate(owner_id, *, new_version: bool = True, progress=None) -> dict:
    """Rotate one user's storage key. Only the small wrapped object keys are rewritten, never a body.

    With `new_version` a new active version is made first; without it (a resumed run) the current
    one is used. Older versions are destroyed only when nothing uses them any more *and* the new
    version has been active longer than any process caches the previous one
    (AIEMAILY_STORAGE_KEY_CACHE_SECONDS): a process with a warm cache may still write under the old
    version until then, and such an object is re-wrapped by the next run.
    """
    blobstore.legacy_keys_move(owner_id)
    if new_version:
        _new_version(owner_id)
    active = StorageKey.objects.get(owner_id=owner_id, active=True)
    new_key = blobstore._user_key(owner_id, active.version)[1]
    moved = skipped = failed = 0
    with owner_scope(owner_id):  # RLS: the owner's rows are visible only under their binding
        columns = list(sealed_columns(owner_id))
    items = list(_object_keys(owner_id)) + columns
    for number, item in enumerate(items, 1):
        outcome = _rewrap_object(owner_id, item, active.version, new_key) if isinstance(item, str) else \
            _rewrap_column(owner_id, item, active.version, new_key)
        moved += outcome == "moved"
        skipped += outcome == "current"
        failed += outcome == "failed"
        if progress and (number % 500 == 0 or number == len(items)):
            progress(number, len(items))
    retired = []
    settled = (timezone.now() - active.created_at).total_seconds() > settings.AIEMAILY_STORAGE_KEY_CACHE_SECONDS
    if not failed and settled:
        with transaction.atomic(using="keys"):
            old = StorageKey.objects.filter(owner_id=owner_id, active=False)
            retired = sorted(old.values_list("version", flat=True))
            old.delete()
        blobstore.key_cache.forget_owner(owner_id)
    return {"version": active.version, "rewrapped": moved, "current": skipped, "failed": failed,
            "retired": retired, "waiting": bool(not settled and StorageKey.objects.filter(
                owner_id=owner_id, active=False).exists())}


def _new_version(owner_id) -> None:
    with transaction.atomic(using="keys"):
        rows = StorageKey.objects.select_for_update().filter(owner_id=owner_id)
        last = rows.order_by("-version").first()
        version = last.version + 1 if last else 1
        raw = bytearray(os.urandom(32))
        try:
            wrapped = blobstore.storage_kms().wrap(bytes(raw), context=blobstore.storage_key_context(owner_id, version))
        finally:
            zero(raw)
        rows.filter(active=True).update(active=False)
        StorageKey.objects.create(owner_id=owner_id, version=version, wrapped=wrapped.ciphertext,
                                  kek_id=wrapped.key_id, kek_version=wrapped.key_version)
    blobstore.key_cache.forget_owner(owner_id)


def _object_keys(owner_id):
    storage, stack = blobstore._storage(), [f"owner/{owner_id}"]
    while stack:
        folder = stack.pop()
        try:
            dirs, files = storage.listdir(folder)
        except FileNotFoundError:
            continue
        yield from (f"{folder}/{name}" for name in files)
        stack.extend(f"{folder}/{d}" for d in dirs)


def _rewrapped(owner_id, name: str, blob: bytes, version: int, new_key: bytes) -> bytes | None:
    """The blob with its object key re-wrapped under `new_key`, or None when already current."""
    (length,) = _LEN.unpack_from(blob, 0)
    wrapped, body = blob[2:2 + length], blob[2 + length:]
    old_version = parse_header(wrapped).key_version
    if old_version == version:
        return None
    aad = blobstore._aad(owner_id, name, "key")
    object_key = bytearray(decrypt(blobstore._user_key(owner_id, old_version)[1], wrapped, aad=aad))
    try:
        fresh = encrypt(new_key, bytes(object_key), aad=aad, key_version=version)
    finally:
        zero(object_key)
    return _LEN.pack(len(fresh)) + fresh + body


def _rewrap_object(owner_id, key: str, version: int, new_key: bytes) -> str:
    try:
        blob = blobstore.objects().read(owner_id, key)
        fresh = _rewrapped(owner_id, key, blob, version, new_key)
    except FileNotFoundError:
        return "current"  # deleted meanwhile: nothing left to protect
    except (blobstore.BlobError, CiphertextError, struct.error, ValueError):
        return "failed"
    if fresh is None:
        return "current"
    # Objects are immutable; the one race is a delete between our read and this write, which
    # leaves an orphan object the next account or mailbox deletion removes with its prefix.
    blobstore.objects().save(owner_id, tuple(key.split("/")[2:]), fresh)
    return "moved"


def _rewrap_column(owner_id, item, version: int, new_key: bytes) -> str:
    model, pk, column, name = item
    with owner_scope(owner_id):
        row = model.objects.for_owner(owner_id).select_for_update().filter(pk=pk).only(column).first()
        value = getattr(row, column, None) if row else None
        if not value:
            return "current"
        try:
            fresh = _rewrapped(owner_id, f"owner/{owner_id}/{name}", bytes(value), version, new_key)
        except (blobstore.BlobError, CiphertextError, struct.error, ValueError):
            return "failed"
        if fresh is None:
            return "current"
        model.objects.for_owner(owner_id).filter(pk=pk).update(**{column: fresh})
    return "moved"

