"""Claiming an idempotency key, recording the response, and reaping expired keys.

How one request with a key runs (all on the request's own connection, inside the one transaction
OwnerScopeMiddleware opens and the owner is bound in):

  1. key_claim takes pg_try_advisory_xact_lock(hash(owner, key)). Every other session sees the lock
     at once, without a commit, and PostgreSQL drops it when the transaction ends however it ends:
     commit, rollback, or a killed process. So a claim is never left "in flight" by a crash.
  2. It then reads the stored row, in a statement that starts after the lock attempt and so sees
     whatever the previous holder committed (both statements go in one round trip). A live row
     answers: same fingerprint → replay it, different → KeyReused. No live row and no lock →
     KeyInFlight (someone is running it now).
  3. The view runs; key_record INSERTs the response in the same transaction as the view's writes,
     so both commit or neither does. A 5xx is not recorded and rolls back: the key is free again.

unique (owner, key) has the last word: even if the lock were skipped, a second execution could
not commit, because its INSERT would fail and take its transaction (and its writes) down with it.
"""

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qsl, urlencode
from uuid import UUID

from django.db import connection
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from aiemaily.idempotency.models import IdempotencyKey
from aiemaily.logging import redact

logger = logging.getLogger(__name__)

KEY_LIFETIME = timedelta(hours=24)
# Only headers that describe the response itself; Set-Cookie, Authorization and anything added by
# middleware (security headers, CORS, Vary) are never stored, and middleware adds its own on replay.
STORED_HEADERS = frozenset({"content-type", "content-language", "location", "link", "etag", "last-modified"})
_FINGERPRINT_SALT = "aiemaily.idempotency.fingerprint"
_LOCK_NAMESPACE = b"aiemaily.idempotency\0"


class KeyInFlight(Exception):
    """Another request with this key is running right now."""


class KeyReused(Exception):
    """The key already belongs to a different request (method, path, query or body)."""


@dataclass(frozen=True)
class Claim:
    """A key this request holds until its transaction ends; key_record turns it into a row."""

    owner_id: UUID
    key: str
    fingerprint: str


def request_fingerprint(*, method: str, path: str, query: str, body: bytes) -> str:
    """HMAC-SHA256 of the request: method, path, sorted query and canonical body.

    Keyed with SECRET_KEY rather than a bare SHA-256 because bodies carry passwords (DELETE account,
    IMAP logins): a plain hash of a known JSON shape could be guessed offline from a database copy.
    JSON bodies are canonical (sorted keys, no insignificant whitespace), so a client that re-encodes
    the same object on retry still matches; anything else is hashed as sent.
    """
    kind, canonical = _canonical_body(body)
    sorted_query = urlencode(sorted(parse_qsl(query, keep_blank_values=True)))
    # A JSON list frames the parts unambiguously (a path cannot run into the query or the body).
    message = json.dumps([method.upper(), path, sorted_query, kind, hashlib.sha256(canonical).hexdigest()])
    return salted_hmac(_FINGERPRINT_SALT, message, algorithm="sha256").hexdigest()


def _canonical_body(body: bytes) -> tuple[str, bytes]:
    if body:
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            pass
        else:
            # ASCII escapes keep any string encodable, lone surrogates ("\ud800") included.
            return "json", json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()
    return "raw", body


def claim_lock_id(owner_id, key: str) -> int:
    """The 64-bit advisory lock id of (owner, key). A collision would only cost a needless 409."""
    digest = hashlib.blake2b(_LOCK_NAMESPACE + f"{owner_id}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def key_claim(*, owner, key: str, fingerprint: str) -> Claim | IdempotencyKey:
    """Claim `key` for this request, or return the stored row to replay; see the module docstring.

    Raises KeyReused (same key, different request) or KeyInFlight (the first is still running).
    """
    locked, stored = _lock_and_look_up(owner, key)
    if stored is not None and stored.expires_at > timezone.now():
        if not constant_time_compare(stored.fingerprint, fingerprint):
            raise KeyReused()
        return stored
    if not locked:
        raise KeyInFlight()
    if stored is not None:
        # Past its 24 hours the key is new again. Deleted in this transaction, so a rollback
        # brings the old row back and the next attempt finds it expired once more.
        IdempotencyKey.objects.for_owner(owner).filter(pk=stored.pk).delete()
    return Claim(owner_id=owner.pk, key=key, fingerprint=fingerprint)


def _lock_and_look_up(owner, key: str) -> tuple[bool, IdempotencyKey | None]:
    """Steps 1 and 2: (the lock was free and is now ours, the stored row if any)."""
    if connection.vendor != "postgresql":
        # The embedded SQLite default: the caller's transaction (BEGIN IMMEDIATE) already holds the
        # database's single write lock, so requests with keys run one at a time anyway.
        return True, _stored(owner, key)
    if not connection.in_atomic_block:
        raise RuntimeError("an idempotency key is claimed inside the request's transaction")
    # Both statements in one round trip (a simple-protocol query of two statements). Each still takes
    # its own snapshot when it starts (READ COMMITTED), so the look-up runs after the lock attempt and
    # sees what the lock's previous holder committed. Plain SQL rather than the ORM: building these
    # two queries cost more than running them. The owner filter is explicit, and RLS applies anyway.
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_AND_LOOK_UP, [claim_lock_id(owner.pk, key), owner.pk, key])
        locked = cursor.fetchone()[0]
        cursor.nextset()
        row = cursor.fetchone()
    if row is None:
        return locked, None
    row_id, fingerprint, status, headers, body, created_at, expires_at = row
    return locked, IdempotencyKey(id=row_id, owner_id=owner.pk, key=key, fingerprint=fingerprint,
                                  response_status=status, response_headers=json.loads(headers),
                                  response_body=bytes(body), created_at=created_at, expires_at=expires_at)


_LOCK_AND_LOOK_UP = (
    "SELECT pg_try_advisory_xact_lock(%s); "
    "SELECT id, fingerprint, response_status, response_headers::text, response_body, created_at, expires_at "
    "FROM idempotency_idempotencykey WHERE owner_id = %s AND key = %s")
_INSERT = (
    "INSERT INTO idempotency_idempotencykey (id, owner_id, key, fingerprint, response_status, response_headers, "
    "response_body, created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s)")


def _stored(owner, key: str) -> IdempotencyKey | None:
    # unique (owner, key): at most one row, so no ORDER BY (which .first() would add).
    return next(iter(IdempotencyKey.objects.for_owner(owner).filter(key=key)[:1]), None)


def key_record(*, claim: Claim, status: int, body: bytes, headers) -> IdempotencyKey:
    """Store the response of a claimed request, in the transaction that holds its writes.

    `headers` are (name, value) pairs; only STORED_HEADERS are kept. Body and header values pass
    through the log redactor: the API never returns a secret, and a replay must not either.
    """
    if not 100 <= status < 500:
        raise ValueError("only 1xx-4xx responses are recorded; a 5xx leaves the key free")
    now = timezone.now()
    row = IdempotencyKey(
        owner_id=claim.owner_id, key=claim.key, fingerprint=claim.fingerprint, response_status=status,
        response_headers=_safe_headers(headers), response_body=_redacted(body), created_at=now,
        expires_at=now + KEY_LIFETIME,
    )
    if connection.vendor != "postgresql":
        row.save(force_insert=True)
        return row
    # Plain SQL, as in _lock_and_look_up: Model.save() cost more than the INSERT. RLS checks the
    # row's owner against the request's binding; the table's constraints check the rest.
    with connection.cursor() as cursor:
        cursor.execute(_INSERT, [row.id, row.owner_id, row.key, row.fingerprint, row.response_status,
                                 json.dumps(row.response_headers), row.response_body, row.created_at, row.expires_at])
    row._state.adding = False
    return row


def _safe_headers(headers) -> list[list[str]]:
    return [[name, redact(value)] for name, value in headers if name.lower() in STORED_HEADERS]


def _redacted(body: bytes) -> bytes:
    # surrogateescape keeps bytes that are not UTF-8 exactly as they were.
    text = body.decode("utf-8", "surrogateescape")
    clean = redact(text)
    if clean != text:
        logger.warning("a response recorded for an idempotency key was redacted; its endpoint echoes a secret",
                       extra={"event": "idempotency_redacted"})
    return clean.encode("utf-8", "surrogateescape")


def keys_reap(*, now=None, batch_size: int = 5000) -> int:
    """Delete every owner's expired keys through the audited unscoped path; returns how many.

    Expired keys are already treated as new, so this only bounds the table. Batches keep each
    DELETE short; the queryset is built once, so the audit log gets one line per run.
    """
    expired = IdempotencyKey.objects.unscoped(
        reason="idempotency reaper: delete keys past their 24 h lifetime"
    ).filter(expires_at__lte=now or timezone.now())
    deleted = 0
    while batch := list(expired.values_list("pk", flat=True)[:batch_size]):
        count, _ = expired.filter(pk__in=batch).delete()
        deleted += count
        if count == 0:
            break  # a concurrent reaper took this batch and will finish the rest; do not spin
    return deleted
