"""Writes to the ledger and the subscription registry.

How a delivery is recorded (every route, in this order; see http.py for the HTTP side):
  1. authenticate it with the provider's own mechanism, then check freshness;
  2. `delivery_accept` INSERTs an accepted row (ON CONFLICT DO NOTHING): the partial unique index on
     (provider, delivery_id) among accepted rows is the replay check, so two copies arriving at
     once (two web workers, two transactions) cannot both be accepted; the loser records `replay`;
  3. the route answers and queues the processing task by ledger row id (on commit);
  4. the task calls `delivery_claim` first: a redelivered task (acks_late) finds it claimed.
A rejected delivery is `delivery_reject`ed: a row with its verdict and a log line, never the body.
"""

import hmac
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connections, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.crypto import salted_hmac

from aiemaily.webhooks.models import Provider, Verdict, WebhookDelivery, WebhookSubscription
from aiemaily.webhooks.selectors import subscription_by_external_id

logger = logging.getLogger("aiemaily.webhooks")

_SECRET_SALT = "aiemaily.webhooks.client-state"
_ADDRESS_SALT = "aiemaily.webhooks.mailbox-address"
_ID_CAP = 255
RETIRED_AGO = timedelta(hours=1)


def clean_id(value: object) -> str:
    """A provider id as we store and log it: printable ASCII, at most 255 characters."""
    text = value if isinstance(value, str) else ""
    return "".join(ch for ch in text[:_ID_CAP] if " " < ch <= "~")


def secret_digest(value: str) -> str:
    """Keyed SHA-256 of a per-subscription secret (Graph's clientState); the secret is not kept."""
    return salted_hmac(_SECRET_SALT, value, algorithm="sha256").hexdigest()


def secret_matches(value: object, digest: str) -> bool:
    """Constant-time comparison of a presented secret with a stored digest."""
    if not isinstance(value, str) or not digest:
        return False
    return hmac.compare_digest(secret_digest(value), digest)


def address_digest(address: str) -> str:
    """Keyed hash of a mailbox address: how a Gmail push finds its mailbox without storing the address."""
    return salted_hmac(_ADDRESS_SALT, address.strip().lower(), algorithm="sha256").hexdigest()


@dataclass(frozen=True)
class Recorded:
    delivery: WebhookDelivery
    accepted: bool  # True only for the first copy: process it. False: a replay, already recorded.


_insert_statements: dict[str, str] = {}


def _insert_unless_duplicate(row: WebhookDelivery) -> bool:
    """INSERT … ON CONFLICT DO NOTHING RETURNING: True when the row went in, False on a duplicate.

    One statement, where a savepoint around a plain INSERT costs three round trips: this runs on
    every delivery. Identifiers come from the model's own metadata, quoted by the backend (the
    statement is made once per database); every value is a parameter. PostgreSQL and SQLite (3.35+)
    both speak this form, and both honour the partial unique index as the conflict.
    """
    connection = connections[WebhookDelivery.objects.db]
    fields = WebhookDelivery._meta.concrete_fields
    statement = _insert_statements.get(connection.alias)
    if statement is None:
        quote = connection.ops.quote_name
        statement = _insert_statements[connection.alias] = (
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING RETURNING {}".format(  # noqa: S608
                quote(WebhookDelivery._meta.db_table), ", ".join(quote(f.column) for f in fields),
                ", ".join(["%s"] * len(fields)), quote(WebhookDelivery._meta.pk.column)))
    with connection.cursor() as cursor:
        cursor.execute(statement, [f.get_db_prep_save(getattr(row, f.attname), connection) for f in fields])
        return cursor.fetchone() is not None


# The registry columns a route decides on, each compared with what the route read, in
# `delivery_accept_if_current` on SQLite: `expires_at` last, as `IS NULL` or `= %s` (two statements,
# built here from the models' metadata).
_CURRENT_FIELDS = ("id", "account_id", "connection_id", "secret_hash", "expires_at")
_current_statements: dict[tuple[str, bool], str] = {}

# On PostgreSQL the same INSERT … WHERE EXISTS runs inside a PL/pgSQL function (migration 0002, where
# the expiry is compared with IS NOT DISTINCT FROM), so the server prepares it once per connection
# instead of on every delivery (PgBouncer rules out prepared statements). The casts make the call
# resolve to the one function whatever types the client sent.
_ACCEPT_IF_CURRENT_CALL = ("SELECT webhooks_accept_if_current(%s::uuid, %s::text, %s::text, %s::text, %s::text, "
                           "%s::timestamptz, %s::uuid, %s::uuid, %s::uuid, %s::text, %s::timestamptz)")


def delivery_accept_if_current(*, provider: str, channel: WebhookSubscription, delivery_id: str,
                               kind: str = "") -> Recorded | None:
    """Accept a delivery for `channel` *as the route read it*, in one statement: the ledger row goes
    in only if the registry still holds exactly that row (same id, owner, mailbox, secret hash and
    expiry) and this is the first copy. None when nothing went in, for either reason (a replay, or
    the channel renewed, retired, re-keyed or deleted since it was read): the caller reads the
    channel again and decides on it as it is now (`delivery_accept` then tells a replay).

    This is what lets a route decide on a channel held in process memory
    (selectors.subscription_route_cached) without ever acting on an out-of-date one: the check that
    it is current is in the same statement as the write, so it costs no round trip of its own. The
    statement compares the registry with itself (the values the route read); what the sender
    presented was compared before, in constant time, by the route.
    """
    connection = connections[WebhookDelivery.objects.db]
    row = _accepted_row(provider=provider, delivery_id=delivery_id, kind=kind, account_id=channel.account_id)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_ACCEPT_IF_CURRENT_CALL, [
                row.pk, str(row.provider), row.delivery_id, row.kind, str(row.verdict), row.received_at, row.account_id,
                channel.pk, channel.connection_id, channel.secret_hash, channel.expires_at])
            inserted = cursor.fetchone()[0]
        return _recorded(row, inserted=True) if inserted else None
    fields = WebhookDelivery._meta.concrete_fields
    current = [WebhookSubscription._meta.get_field(name) for name in _CURRENT_FIELDS]
    no_expiry = channel.expires_at is None
    statement = _current_statements.get((connection.alias, no_expiry))
    if statement is None:
        quote = connection.ops.quote_name
        conditions = [f"{quote(f.column)} = %s" for f in current[:-1]]
        conditions.append(f"{quote(current[-1].column)} IS NULL" if no_expiry else f"{quote(current[-1].column)} = %s")
        statement = _current_statements[(connection.alias, no_expiry)] = (
            "INSERT INTO {} ({}) SELECT {} WHERE EXISTS (SELECT 1 FROM {} WHERE {}) "  # noqa: S608
            "ON CONFLICT DO NOTHING RETURNING {}".format(
                quote(WebhookDelivery._meta.db_table), ", ".join(quote(f.column) for f in fields),
                ", ".join(["%s"] * len(fields)), quote(WebhookSubscription._meta.db_table), " AND ".join(conditions),
                quote(WebhookDelivery._meta.pk.column)))
    params = [f.get_db_prep_save(getattr(row, f.attname), connection) for f in fields]
    compared = current[:-1] if no_expiry else current
    params += [f.get_db_prep_value(getattr(channel, f.attname), connection) for f in compared]
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        inserted = cursor.fetchone() is not None
    return _recorded(row, inserted=True) if inserted else None


def _accepted_row(*, provider: str, delivery_id: str, kind: str, account_id, **fields) -> WebhookDelivery:
    delivery_id, kind = clean_id(delivery_id), clean_id(kind)[:64]
    if not delivery_id:
        raise ValueError("an accepted delivery needs its provider's id")
    return WebhookDelivery(provider=provider, delivery_id=delivery_id, kind=kind, verdict=Verdict.ACCEPTED,
                           account_id=account_id, **fields)


def _recorded(row: WebhookDelivery, *, inserted: bool) -> Recorded:
    """The outcome of an accepted row's unique insert: logged as accepted, or recorded and logged as a replay."""
    if not inserted:
        replay = WebhookDelivery.objects.create(provider=row.provider, delivery_id=row.delivery_id, kind=row.kind,
                                                verdict=Verdict.REPLAY, account_id=row.account_id)
        _log_drop(replay, client_ip="")
        return Recorded(replay, accepted=False)
    row._state.adding = False
    # DEBUG, not INFO: the ledger row is the record of an accepted delivery (and the access log has
    # the request); a line per accepted delivery cost a tenth of a delivery's time on the web worker.
    # Dropped deliveries are logged at WARNING with their verdict (`_log_drop`).
    logger.debug("webhook accepted", extra={"event": "webhook_accepted", "provider": row.provider,
                                           "delivery_id": row.delivery_id, "ledger_id": str(row.pk)})
    return Recorded(row, accepted=True)


def delivery_accept(*, provider: str, delivery_id: str, kind: str = "", account_id=None) -> Recorded:
    """Record an authenticated, fresh delivery; the unique insert decides first copy or replay."""
    row = _accepted_row(provider=provider, delivery_id=delivery_id, kind=kind, account_id=account_id)
    return _recorded(row, inserted=_insert_unless_duplicate(row))


@dataclass(frozen=True)
class PushRecorded:
    """What `push_record` found and did for one push naming a channel by its external id."""

    channel: WebhookSubscription | None  # None: no such channel; nothing was written
    recorded: Recorded | None  # None: the channel has expired (stale); nothing was written
    advanced: bool  # the cursor moved to the push's position: the delivery is open, hand it over


def _expired(channel: WebhookSubscription, now: datetime) -> bool:
    return channel.expires_at is not None and channel.expires_at < now


def push_record(*, provider: str, external_id: str, delivery_id: str, kind: str, position: int,
                now: datetime | None = None) -> PushRecorded:
    """A push (Gmail's) for the channel `external_id` names, authenticated already: find the channel,
    record the delivery (the unique insert is the replay check) and, for a first copy, move the
    channel's cursor forward to `position` if that is newer. An accepted push that moves nothing is
    settled at once (`processed_at` set): a sync from a cursor at or past it is queued already.

    The three writes commit together or not at all. On PostgreSQL they are one statement in
    autocommit (the function `webhooks_push_record`, see below): one round trip where the lookup,
    BEGIN, insert, UPDATE and COMMIT were five, most of a push's cost on the web worker
    (benchmarks/bench_webhooks.py). Elsewhere (the embedded SQLite default) the same steps run one
    by one in a transaction.
    """
    now = now or timezone.now()
    connection = connections[WebhookDelivery.objects.db]
    record = _push_record_in_one_statement if connection.vendor == "postgresql" else _push_record_in_steps
    return record(connection, provider=provider, external_id=external_id, delivery_id=delivery_id, kind=kind,
                  position=position, now=now)


def _push_record_in_steps(connection, *, provider, external_id, delivery_id, kind, position, now) -> PushRecorded:
    with transaction.atomic(using=connection.alias):
        channel = subscription_by_external_id(provider=provider, external_id=external_id)
        if channel is None or _expired(channel, now):
            return PushRecorded(channel, None, advanced=False)
        recorded = delivery_accept(provider=provider, delivery_id=delivery_id, kind=kind,
                                   account_id=channel.account_id)
        advanced = recorded.accepted and subscription_advance_cursor(subscription_id=channel.pk, position=position)
        if recorded.accepted and not advanced:
            delivery_claim(ledger_id=recorded.delivery.pk)
        return PushRecorded(channel, recorded, advanced=advanced)


# One statement, so one snapshot and one commit: a data-modifying CTE, which runs inside the PL/pgSQL
# function `webhooks_push_record` (aiemaily/webhooks/migrations/0002_statement_functions.py) so that
# PostgreSQL prepares it once per server connection rather than on every push (sent as text, parsing and
# planning it was half its cost; PgBouncer's transaction pooling rules out prepared statements).
# How each rule survives:
# - the replay check is still the ledger's unique insert (ON CONFLICT DO NOTHING on the partial index);
#   two copies racing both run the statement, one inserts, the other inserts nothing and moves nothing;
# - the channel is read in the statement (`sub`): no row, nothing inserted; expired, nothing inserted;
# - the cursor moves only for an inserted first copy (`EXISTS (SELECT 1 FROM ins …)`) and only forward:
#   the UPDATE's own WHERE says `cursor < position`, and PostgreSQL re-checks it on the newest row
#   version when a concurrent push has just moved it, so two pushes never move it backwards;
# - a copy whose position is not newer than the cursor in the snapshot is inserted settled
#   (`processed_at` = now) and moves nothing. The cursor never goes down, so that stays true. One
#   that looked newer but lost the race to a concurrent push inserts open and moves nothing: the
#   caller settles it (`delivery_claim`), so every accepted push is queued or settled, never both.
# The tables are the system ledger and registry, not owned tables under row-level security (see
# models.py): no owner is bound for them on any path, so this statement needs no binding either, and
# the function is SECURITY INVOKER: it runs with the caller's privileges and nothing more.
_PUSH_RECORD_CALL = ("SELECT * FROM webhooks_push_record(%(provider)s::text, %(external_id)s::text, %(id)s::uuid, "
                     "%(delivery_id)s::text, %(kind)s::text, %(verdict)s::text, %(now)s::timestamptz, "
                     "%(position)s::bigint)")


def _push_record_in_one_statement(connection, *, provider, external_id, delivery_id, kind, position,
                                  now) -> PushRecorded:
    row = _accepted_row(provider=provider, delivery_id=delivery_id, kind=kind, account_id=None, received_at=now)
    with connection.cursor() as cursor:
        cursor.execute(_PUSH_RECORD_CALL, {"provider": str(provider), "external_id": external_id, "id": row.pk,
                                           "delivery_id": row.delivery_id, "kind": row.kind,
                                           "verdict": str(row.verdict), "now": now, "position": position})
        found = cursor.fetchone()
    if found is None:
        return PushRecorded(None, None, advanced=False)
    *values, inserted, settled, advanced = found
    channel = WebhookSubscription.from_db(connection.alias, ["id", "account_id", "connection_id", "expires_at"],
                                          values)
    if _expired(channel, now):
        return PushRecorded(channel, None, advanced=False)
    row.account_id = channel.account_id
    if settled:
        row.processed_at = now
    recorded = _recorded(row, inserted=inserted)
    if inserted and not settled and not advanced:
        delivery_claim(ledger_id=row.pk)  # it lost the race to a newer push's cursor: nothing to queue
    return PushRecorded(channel, recorded, advanced=advanced)


def delivery_reject(*, provider: str, verdict: str, delivery_id: object = "", kind: object = "",
                    account_id=None, client_ip: str = "") -> WebhookDelivery:
    """Record and log a dropped delivery: verdict and metadata only, never the body or a header."""
    if verdict == Verdict.ACCEPTED:
        raise ValueError("use delivery_accept")
    row = WebhookDelivery.objects.create(provider=provider, delivery_id=clean_id(delivery_id),
                                         kind=clean_id(kind)[:64], verdict=verdict, account_id=account_id)
    _log_drop(row, client_ip=client_ip)
    return row


def _log_drop(row: WebhookDelivery, *, client_ip: str) -> None:
    logger.warning("webhook dropped: %s %s", row.provider, row.verdict,
                   extra={"event": "webhook_dropped", "provider": row.provider, "verdict": row.verdict,
                          "delivery_id": row.delivery_id, "ledger_id": str(row.pk), "client_ip": client_ip})


def delivery_claim(*, ledger_id) -> bool:
    """Mark an accepted delivery processed; False if it was already (a redelivered task) or is unknown.

    One UPDATE with the condition in it, so two workers running the same task cannot both win.
    """
    claimed = WebhookDelivery._base_manager.filter(
        pk=ledger_id, verdict=Verdict.ACCEPTED, processed_at__isnull=True
    ).update(processed_at=timezone.now())
    return claimed == 1


def subscription_store(*, provider: str, external_id: str, account_id, connection_id, secret_hash: str = "",
                       expires_at: datetime | None = None) -> WebhookSubscription:
    """Create or replace the one channel of `provider` for a mailbox (after a watch or subscription call)."""
    now = timezone.now()
    with transaction.atomic():
        WebhookSubscription._base_manager.filter(provider=provider, connection_id=connection_id).exclude(
            external_id=external_id).delete()
        row, _ = WebhookSubscription._base_manager.update_or_create(
            provider=provider, external_id=external_id,
            defaults={"account_id": account_id, "connection_id": connection_id, "secret_hash": secret_hash,
                      "expires_at": expires_at, "renewed_at": now},
        )
    return row


def subscription_renewed(*, subscription_id, expires_at: datetime) -> None:
    WebhookSubscription._base_manager.filter(pk=subscription_id).update(expires_at=expires_at,
                                                                       renewed_at=timezone.now())


def subscription_forget(*, provider: str, connection_id) -> int:
    """Drop the registry row of a mailbox's channel (after it was stopped, or found gone)."""
    deleted, _ = WebhookSubscription._base_manager.filter(provider=provider, connection_id=connection_id).delete()
    return deleted


def subscription_retire(*, provider: str, connection_id) -> int:
    """A disconnected mailbox's channel: kept (so its provider's remaining deliveries are recognised
    as authentic and dropped as stale, not counted as forgeries against the provider's addresses),
    but expired at once. Beat deletes retired rows once the provider can no longer deliver."""
    return WebhookSubscription._base_manager.filter(provider=provider, connection_id=connection_id).update(
        expires_at=timezone.now() - RETIRED_AGO)


def subscription_purge_retired(*, older_than) -> int:
    deleted, _ = WebhookSubscription._base_manager.filter(expires_at__lt=timezone.now() - older_than).delete()
    return deleted


def subscription_advance_cursor(*, subscription_id, position: int) -> bool:
    """Gmail: move the push cursor forward to `position`; False when it is not newer (nothing to do).

    A conditional UPDATE, so concurrent pushes with the same or older history ids queue one sync.
    """
    advanced = WebhookSubscription._base_manager.filter(pk=subscription_id).filter(
        Q(cursor__isnull=True) | Q(cursor__lt=position)).update(cursor=position)
    return advanced == 1


__all__ = ["Provider", "PushRecorded", "Recorded", "Verdict", "address_digest", "clean_id", "delivery_accept",
           "delivery_accept_if_current", "delivery_claim", "delivery_reject", "push_record", "secret_digest",
           "secret_matches", "subscription_advance_cursor", "subscription_forget", "subscription_purge_retired",
           "subscription_renewed", "subscription_retire", "subscription_store"]
