"""Reads of the ledger: recent activity for one account, or (staff, audited) for everyone."""

from django.db import connections

from aiemaily.webhooks.models import Provider, WebhookDelivery, WebhookSubscription

RECENT = 50


def deliveries_recent_for_account(*, account, limit: int = RECENT) -> list[WebhookDelivery]:
    return list(WebhookDelivery.objects.for_account(account).order_by("-received_at")[:limit])


def subscriptions_for_account(*, account) -> list[WebhookSubscription]:
    return list(WebhookSubscription.objects.for_account(account).order_by("provider", "created_at"))


def subscription_by_external_id(*, provider: str, external_id: str) -> WebhookSubscription | None:
    """The route's lookup of an incoming delivery's channel. Unscoped by nature (nobody is signed in),
    but keyed by an id only the provider and we know; not audited per call, since it runs on every
    delivery and names one row by its unguessable key, which is the point of the table.

    A raw SELECT rather than a filtered queryset: it runs on every Gmail and Graph delivery, and
    building and compiling the filter cost the web worker more than the database's answer
    (benchmarks/bench_webhooks.py). Table and column names come from the model, values are
    parameters; raw() still converts the columns per backend (SQLite's text datetimes and UUIDs).
    """
    if not external_id:
        return None
    meta, quote = WebhookSubscription._meta, connections[WebhookSubscription.objects.db].ops.quote_name
    statement = "SELECT * FROM {} WHERE {} = %s AND {} = %s LIMIT 1".format(  # noqa: S608
        quote(meta.db_table), quote(meta.get_field("provider").column), quote(meta.get_field("external_id").column))
    return next(iter(WebhookSubscription._base_manager.raw(statement, [provider, external_id])), None)


def subscription_for_connection(*, provider: str, connection_id) -> WebhookSubscription | None:
    return next(iter(WebhookSubscription._base_manager.filter(provider=provider, connection_id=connection_id)[:1]),
                None)


__all__ = ["Provider", "deliveries_recent_for_account", "subscription_by_external_id",
           "subscription_for_connection", "subscriptions_for_account"]
