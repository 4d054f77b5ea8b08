"""Sealing the metadata of messages and outbox rows stored before issue 17 (plaintext legacy_*
columns), rotating a user's metadata key (every sealed column of both re-encrypted under a new
version), and rebuilding a user's search index. Run by `manage.py metadata_encrypt` with a mail zone's
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
from mail.models import Message, OutboxMessage
from secrets_vault.crypto import parse_header

FIELDS_KEY = metadata_keys.MetadataKey.Purpose.FIELDS
SEALED_MODELS = (Message, OutboxMessage)  # every model whose columns the metadata key seals


def owners() -> list:
    """Every user (the users table is not owned; which of them have legacy rows is asked per owner,
    under their own binding, so no BYPASSRLS role is needed)."""
    return list(get_user_model().objects.order_by("pk").values_list("pk", flat=True))


def _legacy(model, owner_id):
    return model.objects.for_owner(owner_id).filter(**{f"{model.SEALED.sealed_columns[0]}__isnull": True})


def legacy_count(owner_id, model=Message) -> int:
    with owner_scope(owner_id):
        return _legacy(model, owner_id).count()


def owner_encrypt(owner_id, *, batch_size: int = 500, progress=None) -> int:
    """Seal (and index) every legacy message of one owner, then their legacy outbox rows; returns how
    many messages were sealed (outbox rows are few: reported with them)."""
    total, done = legacy_count(owner_id), 0
    while True:
        with owner_scope(owner_id):
            # skip_locked: a row a sync is writing right now is left for the next batch or run.
            rows = list(_legacy(Message, owner_id).select_for_update(skip_locked=True).order_by("pk")[:batch_size])
            if not rows:
                break
            _seal(Message, owner_id, rows)
            search_index.rows_write(rows, replace=True)
        done += len(rows)
        if progress:
            progress(done, max(total, done))
    outbox_encrypt(owner_id, batch_size=batch_size)
    return done


def outbox_encrypt(owner_id, *, batch_size: int = 500) -> int:
    """Seal every legacy outbox row of one owner; returns how many. A row a send has locked is
    skipped this time round (skip_locked), and sealed by the next run."""
    done = 0
    while True:
        with owner_scope(owner_id):
            rows = list(_legacy(OutboxMessage, owner_id).select_for_update(skip_locked=True)
                        .order_by("pk")[:batch_size])
            if not rows:
                return done
            _seal(OutboxMessage, owner_id, rows)
        done += len(rows)


def _seal(model, owner_id, rows) -> None:
    spec, extra = model.SEALED, []
    for row in rows:
        values = {field: metadata.get_value(row, field) for field in spec.fields}
        if model is OutboxMessage and row.last_error.startswith(OutboxMessage.LEGACY_REFUSED):
            # An older release named the refused recipients in last_error, in plaintext: seal them too.
            values["refused_addrs"] = row.last_error[len(OutboxMessage.LEGACY_REFUSED):].split(", ")
            row.last_error, extra = OutboxMessage.REFUSED_SOME, ["last_error"]
        metadata.seal_all(row, values)
    model.objects.for_owner(owner_id).bulk_update(rows, spec.sealed_columns + spec.legacy_columns + extra)


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
    """Re-encrypt every sealed column of the owner (messages and outbox rows) under a new metadata
    key version, then destroy the old versions once nothing uses them and the new one has been
    active longer than any process caches the previous one (AIEMAILY_STORAGE_KEY_CACHE_SECONDS; until
    then run again with `new_version=False`). Rows are read and rewritten in short batches under row
    locks, keyset by id, so an interrupted run resumes with `new_version=False`."""
    with owner_scope(owner_id):
        if new_version:
            metadata_keys.key_create(owner_id, FIELDS_KEY, rotate=True)
        active, _ = metadata_keys.user_key(owner_id, FIELDS_KEY)
        total = sum(_sealed(model, owner_id).count() for model in SEALED_MODELS)
    done = moved = failed = 0
    for model in SEALED_MODELS:
        columns = model.SEALED.sealed_columns
        last = None
        while True:
            with owner_scope(owner_id):
                query = _sealed(model, owner_id)
                if last is not None:
                    query = query.filter(pk__gt=last)
                rows = list(query.select_for_update().order_by("pk").only("pk", "owner_id", *columns)[:batch_size])
                if not rows:
                    break
                changed = []
                for row in rows:
                    outcome = _reseal(row, active)
                    moved += outcome == "moved"
                    failed += outcome == "failed"
                    if outcome == "moved":
                        changed.append(row)
                model.objects.for_owner(owner_id).bulk_update(changed, columns)
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


def _sealed(model, owner_id):
    return model.objects.for_owner(owner_id).filter(**{f"{model.SEALED.sealed_columns[0]}__isnull": False})


def keys_left(owner_id) -> int:
    with owner_scope(owner_id):
        return metadata_keys.MetadataKey.objects.for_owner(owner_id).filter(purpose=FIELDS_KEY).count()


def _reseal(row, active: int) -> str:
    """Re-encrypt the row's columns under the active version: "moved", "current" or "failed"
    (a value that does not open is left as it is, and its old key version is kept)."""
    spec = row.SEALED
    if all(parse_header(bytes(getattr(row, c))).key_version == active for c in spec.sealed_columns):
        return "current"
    try:
        values = {f: metadata.open_value(row.owner_id, row.pk, f, bytes(getattr(row, c)), spec=spec)
                  for f, (c, _, _) in spec.fields.items()}
    except blobstore.BlobError:
        return "failed"
    for field, (column, _, _) in spec.fields.items():
        setattr(row, column, metadata.seal_value(row.owner_id, row.pk, field, values[field], spec))
    return "moved"
