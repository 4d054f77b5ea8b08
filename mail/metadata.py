"""Message metadata at rest: subject, from, to, cc and snippet as ciphertext under the owner's keys.

Each value is AES-256-GCM (secrets_vault.crypto, versioned header) under the owner's metadata key
(mail/metadata_keys.py: random, sealed under the owner's storage key, which lives in the key store),
with associated data binding the owner id, the message id and the field name: a ciphertext copied
to another row, field or owner fails authentication, and is reported (logged, never its content)
and shown as UNREADABLE, never as the moved value.

The plaintext is never a column: `Message.subject` and friends are properties (mail/models.py)
that keep a value set in this process until the row is written, when `seal_pending` seals it, and
decrypt a stored value on first read (so a list decrypts only the rows it renders). Dates, sizes,
flags, labels, ids and thread ids stay plain: sorting, keyset paging, unread counts and threading
are done by the database on them (docs/security-model.md says what they reveal).
"""

import json
import logging
import uuid

from mail import blobstore, metadata_keys, search_index
from secrets_vault.crypto import CiphertextError, decrypt, encrypt, parse_header

logger = logging.getLogger(__name__)

# Field name -> (sealed column, legacy plaintext attribute, kind).
FIELDS = {
    "subject": ("subject_ct", "legacy_subject", str),
    "from_addr": ("from_ct", "legacy_from_addr", str),
    "to_addrs": ("to_ct", "legacy_to_addrs", list),
    "cc_addrs": ("cc_ct", "legacy_cc_addrs", list),
    "snippet": ("snippet_ct", "legacy_snippet", str),
}
SEALED_COLUMNS = [column for column, _, _ in FIELDS.values()]
LEGACY_COLUMNS = [legacy for _, legacy, _ in FIELDS.values()]
UNREADABLE = "(unreadable: failed authentication)"

_PENDING = "_metadata_pending"  # values set in this process, not sealed yet
_PLAIN = "_metadata_plain"  # values opened (or set) in this process


def _uuid_text(value) -> str:
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


def field_aad(owner_id, message_id, field: str) -> bytes:
    """The associated data of a sealed column: whose, which message, which field.

    Exactly the bytes of secrets_vault.crypto.canonical_aad for these four values (tested), built
    without JSON: the ids are canonical UUID text and the field names plain identifiers, so nothing
    needs escaping, and a list page builds 250 of these."""
    if field not in FIELDS:
        raise ValueError("not a sealed metadata field")
    return (f'{{"field":"{field}","message_id":"{_uuid_text(message_id)}","owner_id":"{_uuid_text(owner_id)}",'
            f'"purpose":"message-metadata"}}').encode()


def seal_value(owner_id, message_id, field: str, data: bytes) -> bytes:
    version, key = metadata_keys.user_key(owner_id, metadata_keys.MetadataKey.Purpose.FIELDS)
    return encrypt(key, data, aad=field_aad(owner_id, message_id, field), key_version=version)


def open_value(owner_id, message_id, field: str, sealed: bytes, *, keys: dict | None = None) -> bytes:
    """The inverse of seal_value; tampered, moved, or shredded raises BlobError. `keys` memoises
    the key versions within one call site (a row's five fields)."""
    try:
        version = parse_header(sealed).key_version
        key = keys.get(version) if keys is not None else None
        if key is None:
            key = metadata_keys.user_key(owner_id, metadata_keys.MetadataKey.Purpose.FIELDS, version)[1]
            if keys is not None:
                keys[version] = key
        return decrypt(key, sealed, aad=field_aad(owner_id, message_id, field))
    except CiphertextError:
        raise blobstore.BlobError("value failed authentication (tampered, moved, or not this owner's)") from None


def _encode(kind, value) -> bytes:
    if kind is list:
        return json.dumps([str(v) for v in (value or [])], ensure_ascii=False).encode("utf-8")
    return str(value or "").encode("utf-8")


def _decode(kind, data: bytes):
    if kind is list:
        value = json.loads(data.decode("utf-8"))
        if not isinstance(value, list):
            raise ValueError("not a list")
        return [str(v) for v in value]
    return data.decode("utf-8")


def set_value(message, field: str, value) -> None:
    """A property setter: remember the plaintext until the row is written (seal_pending)."""
    kind = FIELDS[field][2]
    value = [str(v) for v in (value or [])] if kind is list else str(value or "")
    message.__dict__.setdefault(_PENDING, {})[field] = value
    message.__dict__.setdefault(_PLAIN, {})[field] = value


def get_value(message, field: str):
    """A property getter: the value set in this process, or the stored one decrypted. The first
    read of a row opens all its fields at once (one key look-up for the row; a list shows four of
    the five anyway), so only rows that are shown are ever opened."""
    plain = message.__dict__.setdefault(_PLAIN, {})
    if field not in plain:
        keys: dict = {}
        for name in FIELDS:
            if name not in plain:
                plain[name] = _open(message, name, keys)
    value = plain[field]
    return list(value) if isinstance(value, list) else value


def _open(message, field: str, keys: dict):
    column, legacy, kind = FIELDS[field]
    sealed = getattr(message, column)
    if sealed is None:  # a row written before encryption, not migrated yet (manage.py metadata_encrypt)
        value = getattr(message, legacy)
        return list(value or []) if kind is list else (value or "")
    try:
        return _decode(kind, open_value(message.owner_id, message.pk, field, bytes(sealed), keys=keys))
    except (blobstore.BlobError, ValueError, UnicodeDecodeError):
        # Tampered, copied from another row or owner, or its key shredded: say so, never show it.
        logger.warning("message %s: sealed %s failed authentication", message.pk, field,
                       extra={"event": "metadata_unreadable"})
        return [] if kind is list else UNREADABLE


def seal_all(message, values: dict) -> list[str]:
    """Seal `values` (every field) into the row's columns and clear the legacy plaintext columns,
    and leave the row's search-term hashes on it for its index row (search_index.rows_write: a row
    is sealed and indexed from the same values). Returns the columns written."""
    written = []
    message.__dict__["_search_terms"] = search_index.message_terms(message.owner_id, subject=values["subject"],
                                                                   sender=values["from_addr"])
    for field, (column, legacy, kind) in FIELDS.items():
        sealed = seal_value(message.owner_id, message.pk, field, _encode(kind, values[field]))
        setattr(message, column, sealed)
        setattr(message, legacy, [] if kind is list else "")
        written += [column, legacy]
    message.__dict__[_PLAIN] = {**message.__dict__.get(_PLAIN, {}), **values}
    message.__dict__.pop(_PENDING, None)
    return written


def seal_pending(message) -> list[str]:
    """Before a row is written: seal the values set in this process (all five fields, so a row is
    either wholly sealed or wholly legacy). Returns the columns to write, [] when nothing changed.

    The metadata key comes from a per-process cache: a batch of rows costs at most one key read
    (and one storage-key unwrap), not one per value.
    """
    pending = message.__dict__.get(_PENDING)
    if not pending and message.subject_ct is not None:
        return []
    if not pending and message._state.adding is False:
        return []  # a legacy row saved for another reason: the migration command seals it
    values = {field: get_value(message, field) for field in FIELDS}
    return seal_all(message, values)
