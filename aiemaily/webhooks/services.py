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


def delivery_accept(*, provider: str, delivery_id: str, kind: str = "", account_id=None) -> Recorded:
    """Record an authenticated, fresh delivery; the unique insert decides first copy or replay."""
    delivery_id, kind = clean_id(delivery_id), clean_id(kind)[:64]
    if not delivery_id:
        raise ValueError("an accepted delivery needs its provider's id")
    row = WebhookDelivery(provider=provider, delivery_id=delivery_id, kind=kind, verdict=Verdict.ACCEPTED,
                          account_id=account_id)
    if not _insert_unless_duplicate(row):
        row = WebhookDelivery.objects.create(provider=provider, delivery_id=delivery_id, kind=kind,
                                             verdict=Verdict.REPLAY, account_id=account_id)
        _log_drop(row, client_ip="")
        return Recorded(row, accepted=False)
    row._state.adding = False
    logger.info("webhook accepted", extra={"event": "webhook_accepted", "provider": provider,
                                           "delivery_id": delivery_id, "ledger_id": str(row.pk)})
    return Recorded(row, accepted=True)


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


__all__ = ["Provider", "Recorded", "Verdict", "address_digest", "clean_id", "delivery_accept", "delivery_claim",
           "delivery_reject", "secret_digest", "secret_matches", "subscription_advance_cursor",
           "subscription_forget", "subscription_purge_retired", "subscription_renewed", "subscription_retire",
           "subscription_store"]
