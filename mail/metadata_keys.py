"""Per-user metadata keys: the key that seals message metadata columns ("fields", versioned, rotated
by `manage.py metadata_encrypt --rotate`) and the blind-index key ("index").

Each is 32 random bytes sealed under the owner's storage key (mail/blobstore.py `seal_field`, so
its own wrapped key, the storage key in the key store, the storage KMS key above that): shredding
the storage keys at account deletion makes every metadata ciphertext and every index hash of the
user meaningless, in backups too. One key per user rather than one per value keeps a list page at
one AES-GCM operation per field shown, and a storage-key rotation re-wraps two small rows per user
instead of every message's columns.
"""

import os
import struct
import uuid

from django.db import IntegrityError, models, transaction
from django.utils import timezone

from aiemaily.ownership.models import OwnedModel
from mail import blobstore
from secrets_vault.crypto import zero

_VERSION = struct.Struct(">I")


class MetadataKey(OwnedModel):
    class Purpose(models.TextChoices):
        FIELDS = "fields", "message metadata columns"
        INDEX = "index", "search index"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    purpose = models.CharField(max_length=8, choices=Purpose.choices)
    version = models.PositiveIntegerField(default=1)
    active = models.BooleanField(default=True)
    key_ct = models.BinaryField(editable=False, help_text="sealed under the owner's storage key")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        app_label = "mail"
        constraints = [
            models.UniqueConstraint(fields=["owner", "purpose", "version"], name="metadatakey_owner_purpose_version"),
            models.UniqueConstraint(fields=["owner", "purpose"], condition=models.Q(active=True),
                                    name="metadatakey_one_active_per_purpose"),
        ]

    def __str__(self):
        return f"{self.purpose} key v{self.version} (sealed)"


def sealed_name(purpose: str, version: int) -> str:
    """The name bound into the key's own sealing: a key row copied to another purpose or version
    (or owner) does not open."""
    return f"metadata-key/{purpose}-v{version}"


def _slot(purpose: str, version) -> str:
    return f"metadata-{purpose}-{version}"  # a slot in blobstore.key_cache: shredding empties it


def user_key(owner_id, purpose: str, version: int | None = None, *, create: bool = True) -> tuple[int, bytes]:
    """(version, key): the given version, or the active one (made on first use unless `create` is
    False: then (0, b"") when there is none). Cached per process like the storage key, so a sync
    batch or a list page costs at most one database read. Call inside the owner's binding."""
    slot = _slot(purpose, version if version is not None else "active")
    cached = blobstore.key_cache.get(owner_id, slot)
    if cached is not None:
        if version is None:
            return _VERSION.unpack_from(cached)[0], cached[_VERSION.size:]
        return version, cached
    rows = MetadataKey.objects.for_owner(owner_id).filter(purpose=purpose)
    row = rows.filter(version=version).first() if version is not None else rows.filter(active=True).first()
    if row is None:
        if version is not None:
            raise blobstore.BlobError("this metadata key version no longer exists")
        if not create:
            return 0, b""
        row = key_create(owner_id, purpose)
    key = blobstore.open_field(owner_id, sealed_name(purpose, row.version), bytes(row.key_ct))
    blobstore.key_cache.put(owner_id, _slot(purpose, row.version), key)
    if version is None:
        blobstore.key_cache.put(owner_id, slot, _VERSION.pack(row.version) + key)
    return row.version, key


def key_create(owner_id, purpose: str, *, rotate: bool = False) -> MetadataKey:
    """The first key of this purpose, or (`rotate`) a new active version beside the old ones."""
    raw = bytearray(os.urandom(32))
    try:
        with transaction.atomic():
            rows = MetadataKey.objects.for_owner(owner_id).filter(purpose=purpose)
            last = rows.select_for_update().order_by("-version").first()
            if last is not None and not rotate:
                return rows.get(active=True)
            version = last.version + 1 if last else 1
            rows.filter(active=True).update(active=False)
            row = MetadataKey.objects.create(owner_id=owner_id, purpose=purpose, version=version,
                                             key_ct=blobstore.seal_field(owner_id, sealed_name(purpose, version),
                                                                         bytes(raw)))
    except IntegrityError:  # made concurrently by another worker: use theirs
        return MetadataKey.objects.for_owner(owner_id).get(purpose=purpose, active=True)
    finally:
        zero(raw)
    blobstore.key_cache.forget_owner(owner_id)  # no process-local "active" slot may outlive this
    return row
