"""Owner-prefixed object storage keys: `owner/<owner id>/<part>/<part>...`.

Every blob key begins with its owner's id, and every read checks the key against the owner asking.
This is the path layer; the crypto layer (the owner id inside each object's associated data, so a
blob copied under another owner's prefix fails to decrypt) sits on top in mail/blobstore.py.
"""

import re
from uuid import UUID

from django.core.files.base import ContentFile
from django.core.files.storage import Storage

_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,199}$")


class ForeignObjectKey(PermissionError):
    """A key outside the asking owner's prefix, or one that tries to escape it."""


def owner_prefix(owner_id) -> str:
    return f"owner/{UUID(str(owner_id))}/"


def owned_key(owner_id, *parts: str) -> str:
    if not parts:
        raise ValueError("an object key needs at least one part after the owner prefix")
    for part in parts:
        if not _PART.match(part) or ".." in part:
            raise ValueError("object key parts are letters, digits, '.', '_', '=', '-' (no separators)")
    return owner_prefix(owner_id) + "/".join(parts)


def check_owned_key(owner_id, key: str) -> None:
    prefix = owner_prefix(owner_id)
    rest = key[len(prefix):] if key.startswith(prefix) else None
    if rest is None or not rest or any(not _PART.match(p) or ".." in p for p in rest.split("/")):
        raise ForeignObjectKey("object key does not belong to this owner")


class OwnedStorage:
    """A Django Storage (filesystem or S3) that only reads and writes inside an owner's prefix."""

    def __init__(self, storage: Storage):
        self.storage = storage

    def save(self, owner_id, parts: tuple[str, ...], data: bytes) -> str:
        key = owned_key(owner_id, *parts)
        if hasattr(self.storage, "write_object"):  # the local fast path (mail/blobstore.py)
            self.storage.write_object(key, data)
            return key
        if self.storage.exists(key):
            self.storage.delete(key)  # keys are content-addressed or unique; a rewrite replaces
        saved = self.storage.save(key, ContentFile(data))
        if saved != key:
            raise RuntimeError("storage renamed an object key; refusing to continue")
        return key

    def read(self, owner_id, key: str) -> bytes:
        check_owned_key(owner_id, key)
        with self.storage.open(key, "rb") as handle:
            return handle.read()

    def delete(self, owner_id, key: str) -> None:
        check_owned_key(owner_id, key)
        self.storage.delete(key)
