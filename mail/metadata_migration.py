"""Sealing the metadata of messages stored before issue 17 (plaintext legacy_* columns), rotating a
user's metadata key (every sealed column re-encrypted under a new version), and rebuilding a user's
search index. Run by `manage.py metadata_encrypt` with a mail zone's
configuration (the storage KMS key and the key store).

Each batch is one short transaction bound to its owner, which seals the rows' five fields, empties
the plaintext columns and writes their index rows together: an interrupted run leaves every row
either plaintext (picked up by the next run) or wholly sealed and indexed, never half.
"""

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from aiemaily.ownership.binding import owner_scope
from mail import blobstore, metadata, metadata_keys, search_index
from mail.models import Message
from secrets_vault.crypto import parse_header

FIELDS_KEY = metadata_keys.MetadataKey.Purpose.FIELDS


def owners() -> list:
    """Every user (the users table is not owned; which of them have legacy rows is asked per owner,
    under their own binding, so no BYPASSRLS role is needed)."""
    return list(get_user_model().objects.order_by("pk").values_list("pk", flat=True))


def legacy_count(owner_id) -> int:
    with owner_scope(owner_id):
        return Message.objects.for_owner(owner_id).filter(subject_ct__isnull=True).count()


def owner_encrypt(owner_id, *, batch_size: int = 500, progress=None) -> int:
    """Seal and index every legacy row of one owner; returns how many rows were sealed."""
    total, done = legacy_count(owner_id), 0
    while True:
        with owner_scope(owner_id):
            # skip_locked: a row a sync is writing right now is left for the next batch or run.
            rows = list(Message.objects.for_owner(owner_id).filter(subject_ct__isnull=True)
                        .select_for_update(skip_locked=True).order_by("pk")[:batch_size])
            if not rows:
                break
            for row in rows:
                metadata.seal_all(row, {field: metadata.get_value(row, field) for field in metadata.FIELDS})
            Message.objects.for_owner(owner_id).bulk_update(rows, metadata.SEALED_COLUMNS + metadata.LEGACY_COLUMNS)
            search_index.rows_write(rows, replace=True)
        done += len(rows)
        if progress:
            progress(done, max(total, done))
    return done


def owner_reindex(owner_id, *, batch_size: int = 1000, progress=None) -> int:
    """Rebuild the owner's search index from their sealed rows (after a change to normalisation, or
    for rows whose index did not survive migration 0011)."""
    with owner_scope(owner_id):
        ids = list(Message.objects.for_owner(owner_id).filter(subject_ct__isnull=False)
                   .order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(ids), batch_size):
        with owner_scope(owner_id):
            rows = list(Message.objects.for_owner(owner_id).filter(pk__in=ids[start:start + batch_size]))
            for row in rows:
                row.__dict__["_search_terms"] = search_index.message_terms(owner_id, subject=row.subject,
                                                                           sender=row.from_addr)
            search_index.rows_write(rows, replace=True)
        if progress:
            progress(min(start + batch_size, len(ids)), len(ids))
    return len(ids)


def owner_rotate(owner_id, *, new_version: bool = True, batch_size: int = 500, progress=None) -> dict:
    """Re-encrypt every sealed column of the owner under a new metadata key version, then destroy
    the old versions once nothing uses them and the new one has been active longer than any process
    caches the previous one (AIEMAILY_STORAGE_KEY_CACHE_SECONDS; until then run again with
    `new_version=False`). Rows are read and rewritten in short batches under row locks, keyset by id,
    so an interrupted run resumes with `new_version=False`."""
    with owner_scope(owner_id):
        if new_version:
            metadata_keys.key_create(owner_id, FIELDS_KEY, rotate=True)
        active, _ = metadata_keys.user_key(owner_id, FIELDS_KEY)
        total = Message.objects.for_owner(owner_id).filter(subject_ct__isnull=False).count()
    done = moved = failed = 0
    last = None
    while True:
        with owner_scope(owner_id):
            query = Message.objects.for_owner(owner_id).filter(subject_ct__isnull=False)
            if last is not None:
                query = query.filter(pk__gt=last)
            rows = list(query.select_for_update().order_by("pk").only("pk", "owner_id", *metadata.SEALED_COLUMNS)
                        [:batch_size])
            if not rows:
                break
            changed = []
            for row in rows:
                outcome = _reseal(row, active)
                moved += outcome == "moved"
                failed += outcome == "failed"
                if outcome == "moved":
                    changed.append(row)
            Message.objects.for_owner(owner_id).bulk_update(changed, metadata.SEALED_COLUMNS)
        last, done = rows[-1].pk, done + len(rows)
        if progress:
            progress(done, total)
    retired = []
    with owner_scope(owner_id):
        keys = metadata_keys.MetadataKey.objects.for_owner(owner_id).filter(purpose=FIELDS_KEY)
        current = keys.get(active=True)
        settled = (timezone.now() - current.created_at).total_seconds() > settings.AIEMAILY_STORAGE_KEY_CACHE_SECONDS
        if not failed and settled:
            retired = sorted(keys.filter(active=False).values_list("version", flat=True))
            keys.filter(active=False).delete()
    blobstore.key_cache.forget_owner(owner_id)
    return {"version": active, "resealed": moved, "failed": failed, "retired": retired,
            "waiting": not settled and keys_left(owner_id) > 1}


def keys_left(owner_id) -> int:
    with owner_scope(owner_id):
        return metadata_keys.MetadataKey.objects.for_owner(owner_id).filter(purpose=FIELDS_KEY).count()


def _reseal(row, active: int) -> str:
    """Re-encrypt the row's columns under the active version: "moved", "current" or "failed"
    (a value that does not open is left as it is, and its old key version is kept)."""
    if all(parse_header(bytes(getattr(row, c))).key_version == active for c in metadata.SEALED_COLUMNS):
        return "current"
    try:
        values = {f: metadata.open_value(row.owner_id, row.pk, f, bytes(getattr(row, c)))
                  for f, (c, _, _) in metadata.FIELDS.items()}
    except blobstore.BlobError:
        return "failed"
    for field, (column, _, _) in metadata.FIELDS.items():
        setattr(row, column, metadata.seal_value(row.owner_id, row.pk, field, values[field]))
    return "moved"
