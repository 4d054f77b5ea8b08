"""Mail metadata at rest: a message's subject, from, to, cc and snippet, and an outbox row's to, cc,
subject and In-Reply-To, as ciphertext under the owner's keys.

Each value is AES-256-GCM (secrets_vault.crypto, versioned header) under the owner's metadata key
(mail/metadata_keys.py: random, sealed under the owner's storage key, which lives in the key store),
with associated data binding the owner id, the row id, the field name and the kind of row: a
ciphertext copied to another row, field, owner or table fails authentication, and is reported
(logged, never its content) and shown as UNREADABLE, never as the moved value.

The plaintext is never a column: `Message.subject`, `OutboxMessage.to_addrs` and friends are
properties (mail/models.py) that keep a value set in this process until the row is written, when
`seal_pending` seals it, and decrypt a stored value on first read (so a list decrypts only the rows
it renders). Dates, sizes, flags, labels, ids, thread ids, statuses and Message-IDs stay plain:
sorting, keyset paging, unread counts, threading and the outbox's Sent-folder look-up are done on
them (docs/security-model.md says what they reveal).
"""

import json
import logging
import uuid

from mail import blobstore, metadata_keys, search_index
from secrets_vault.crypto import CiphertextError, cipher, decrypt_with_cipher, encrypt_with_cipher, parse_header

logger = logging.getLogger(__name__)

class Sealed:
    """What one model seals: its fields as name -> (sealed column, legacy plaintext attribute, kind),
    and the names its associated data uses for the row id and the purpose."""

    def __init__(self, purpose: str, id_name: str, fields: dict):
        self.purpose, self.id_name, self.fields = purpose, id_name, fields
        self.sealed_columns = [column for column, _, _ in fields.values()]
        self.legacy_columns = [legacy for _, legacy, _ in fields.values() if legacy]


MESSAGE = Sealed("message-metadata", "message_id", {
    "subject": ("subject_ct", "legacy_subject", str),
    "from_addr": ("from_ct", "legacy_from_addr", str),
    "to_addrs": ("to_ct", "legacy_to_addrs", list),
    "cc_addrs": ("cc_ct", "legacy_cc_addrs", list),
    "snippet": ("snippet_ct", "legacy_snippet", str),
})
# Mail being sent: who to, about what, in reply to which message (its body is an object, like a
# message's). Its Message-ID stays plain: ours, random, and the Sent-folder look-up needs it.
OUTBOX = Sealed("outbox-metadata", "outbox_id", {
    "to_addrs": ("to_ct", "legacy_to_addrs", list),
    "cc_addrs": ("cc_ct", "legacy_cc_addrs", list),
    "subject": ("subject_ct", "legacy_subject", str),
    "in_reply_to": ("in_reply_to_ct", "legacy_in_reply_to", str),
    "refused_addrs": ("refused_ct", None, list),  # the recipients the server refused (no plaintext past)
})
# The message's, under their first names (the migration command and the tests use them).
FIELDS, SEALED_COLUMNS, LEGACY_COLUMNS = MESSAGE.fields, MESSAGE.sealed_columns, MESSAGE.legacy_columns
UNREADABLE = "(unreadable: failed authentication)"

_PENDING = "_metadata_pending"  # values set in this process, not sealed yet
_PLAIN = "_metadata_plain"  # values opened (or set) in this process
_FAILED = "_metadata_failed"  # fields whose stored value failed authentication
_CIPHERS = "_metadata_ciphers"  # key version -> cipher, for this row's fields


def _uuid_text(value) -> str:
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


def field_aad(owner_id, row_id, field: str, spec: Sealed = MESSAGE) -> bytes:
    """The associated data of a sealed column: whose, which row (of which kind), which field.

    Exactly the bytes of secrets_vault.crypto.canonical_aad for these four values (tested), built
    without JSON: the ids are canonical UUID text and the field names plain identifiers, so nothing
    needs escaping, and a list page builds 250 of these. (The keys are in canonical, sorted order
    for both kinds: "field" < "message_id" | "outbox_id" < "owner_id" < "purpose".)"""
    if field not in spec.fields:
        raise ValueError("not a sealed metadata field")
    return (f'{{"field":"{field}","{spec.id_name}":"{_uuid_text(row_id)}","owner_id":"{_uuid_text(owner_id)}",'
            f'"purpose":"{spec.purpose}"}}').encode()


def seal_value(owner_id, row_id, field: str, data: bytes, spec: Sealed = MESSAGE, *,
               sealer: tuple | None = None) -> bytes:
    """Seal one column's value. `sealer` (from field_sealer) lets a row's fields share one key
    look-up and one AES key schedule."""
    version, aead = sealer or field_sealer(owner_id)
    return encrypt_with_cipher(aead, data, aad=field_aad(owner_id, row_id, field, spec), key_version=version)


def field_sealer(owner_id) -> tuple:
    """(active key version, cipher) of the owner's metadata-fields key."""
    version, key = metadata_keys.user_key(owner_id, metadata_keys.MetadataKey.Purpose.FIELDS)
    return version, cipher(key)


def open_value(owner_id, row_id, field: str, sealed: bytes, *, keys: dict | None = None,
               spec: Sealed = MESSAGE) -> bytes:
    """The inverse of seal_value; tampered, moved, or shredded raises BlobError. `keys` memoises
    the cipher of each key version within one row (its fields share one key look-up and one AES key
    schedule)."""
    try:
        version = parse_header(sealed).key_version
        opener = keys.get(version) if keys is not None else None
        if opener is None:
            opener = cipher(metadata_keys.user_key(owner_id, metadata_keys.MetadataKey.Purpose.FIELDS, version)[1])
            if keys is not None:
                keys[version] = opener
        return decrypt_with_cipher(opener, sealed, aad=field_aad(owner_id, row_id, field, spec))
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


def set_value(row, field: str, value) -> None:
    """A property setter: remember the plaintext until the row is written (seal_pending)."""
    kind = row.SEALED.fields[field][2]
    value = [str(v) for v in (value or [])] if kind is list else str(value or "")
    row.__dict__.setdefault(_PENDING, {})[field] = value
    row.__dict__.setdefault(_PLAIN, {})[field] = value


def get_value(row, field: str):
    """A property getter: the value set in this process, or the stored one decrypted on first read.
    Only the fields read are opened (a list page shows subject, sender and snippet, not to/cc), and
    only rows that are shown; a row's fields share one key look-up and cipher (kept on the row, so
    for no longer than the request that loaded it)."""
    plain = row.__dict__.setdefault(_PLAIN, {})
    if field not in plain:
        plain[field] = _open(row, field, row.__dict__.setdefault(_CIPHERS, {}))
    value = plain[field]
    return list(value) if isinstance(value, list) else value


def _open(row, field: str, keys: dict):
    spec = row.SEALED
    column, legacy, kind = spec.fields[field]
    sealed = getattr(row, column)
    if sealed is None:  # a row written before encryption, not migrated yet (manage.py metadata_encrypt)
        value = getattr(row, legacy) if legacy else None
        return list(value or []) if kind is list else (value or "")
    try:
        return _decode(kind, open_value(row.owner_id, row.pk, field, bytes(sealed), keys=keys, spec=spec))
    except (blobstore.BlobError, ValueError, UnicodeDecodeError):
        # Tampered, copied from another row or owner, or its key shredded: say so, never show it.
        logger.warning("%s %s: sealed %s failed authentication", spec.purpose, row.pk, field,
                       extra={"event": "metadata_unreadable"})
        row.__dict__.setdefault(_FAILED, set()).add(field)
        return [] if kind is list else UNREADABLE


def unreadable(row) -> set[str]:
    """The fields of this row that failed authentication (read them first): a list field reads as
    [] then, which a sender must not take for "no recipients"."""
    for field in row.SEALED.fields:
        get_value(row, field)
    return set(row.__dict__.get(_FAILED, ()))


def seal_all(row, values: dict) -> list[str]:
    """Seal `values` (every field) into the row's columns and clear the legacy plaintext columns;
    for a message, also leave its search-term hashes on it for its index row
    (search_index.rows_write: a row is sealed and indexed from the same values). Returns the
    columns written."""
    spec, written = row.SEALED, []
    if spec is MESSAGE:
        row.__dict__["_search_terms"] = search_index.message_terms(row.owner_id, subject=values["subject"],
                                                                   sender=values["from_addr"])
    sealer = field_sealer(row.owner_id)
    for field, (column, legacy, kind) in spec.fields.items():
        sealed = seal_value(row.owner_id, row.pk, field, _encode(kind, values[field]), spec, sealer=sealer)
        setattr(row, column, sealed)
        written.append(column)
        if legacy:
            setattr(row, legacy, [] if kind is list else "")
            written.append(legacy)
    row.__dict__[_PLAIN] = {**row.__dict__.get(_PLAIN, {}), **values}
    row.__dict__.pop(_PENDING, None)
    return written


def seal_pending(row) -> list[str]:
    """Before a row is written: seal the values set in this process (all its fields, so a row is
    either wholly sealed or wholly legacy). Returns the columns to write, [] when nothing changed.

    The metadata key comes from a per-process cache: a batch of rows costs at most one key read
    (and one storage-key unwrap), not one per value.
    """
    spec = row.SEALED
    pending = row.__dict__.get(_PENDING)
    if not pending and getattr(row, spec.sealed_columns[0]) is not None:
        return []
    if not pending and row._state.adding is False:
        return []  # a legacy row saved for another reason: the migration command seals it
    values = {field: get_value(row, field) for field in spec.fields}
    return seal_all(row, values)
