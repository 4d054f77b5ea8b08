"""Reads of the ledger: recent activity for one account, or (staff, audited) for everyone."""

from django.db import connections

from aiemaily.webhooks.models import Provider, WebhookDelivery, WebhookSubscription

RECENT = 50


def deliveries_recent_for_account(*, account, limit: int = RECENT) -> list[WebhookDelivery]:
    return list(WebhookDelivery.objects.for_account(account).order_by("-received_at")[:limit])


def subscriptions_for_account(*, account) -> list[WebhookSubscription]:
    return list(WebhookSubscription.objects.for_account(account).order_by("provider", "created_at"))


# What a route needs of a channel (the rest is deferred): read on every Gmail and Graph delivery.
_ROUTE_FIELDS = ("id", "account_id", "connection_id", "secret_hash", "expires_at")
_route_lookups: dict[str, tuple[str, list]] = {}


def _route_lookup(connection) -> tuple[str, list]:
    """The lookup's SQL and each column's converters (SQLite's text datetimes and UUIDs, for one),
    made once per database: the same conversions the ORM's compiler applies."""
    if connection.alias not in _route_lookups:
        meta, quote = WebhookSubscription._meta, connection.ops.quote_name
        fields = [meta.get_field(name) for name in _ROUTE_FIELDS]
        statement = "SELECT {} FROM {} WHERE {} = %s AND {} = %s LIMIT 1".format(  # noqa: S608
            ", ".join(quote(f.column) for f in fields), quote(meta.db_table),
            quote(meta.get_field("provider").column), quote(meta.get_field("external_id").column))
        converters = []
        for field in fields:
            column = field.get_col(meta.db_table)
            converters.append((column, connection.ops.get_db_converters(column) + field.get_db_converters(connection)))
        _route_lookups[connection.alias] = statement, converters
    return _route_lookups[connection.alias]


def subscription_by_external_id(*, provider: str, external_id: str) -> WebhookSubscription | None:
    """The route's lookup of an incoming delivery's channel. Unscoped by nature (nobody is signed in),
    but keyed by an id only the provider and we know; not audited per call, since it runs on every
    delivery and names one row by its unguessable key, which is the point of the table.

    One prepared SELECT of the five columns a route reads, rather than a filtered queryset: it runs on
    every Gmail and Graph delivery, and building and compiling the queryset cost the web worker more
    than the database's answer (benchmarks/bench_webhooks.py). The other fields are deferred.
    """
    if not external_id:
        return None
    connection = connections[WebhookSubscription.objects.db]
    statement, converters = _route_lookup(connection)
    with connection.cursor() as cursor:
        cursor.execute(statement, [provider, external_id])
        row = cursor.fetchone()
    if row is None:
        return None
    values = []
    for value, (column, functions) in zip(row, converters, strict=True):
        for convert in functions:
            value = convert(value, column, connection)
        values.append(value)
    return WebhookSubscription.from_db(connection.alias, list(_ROUTE_FIELDS), values)


# (provider, external id) -> the channel as last read by this process: what `subscription_route_cached`
# answers from. Only rows that exist are held (an unknown id is looked up every time, so a channel
# created a moment ago is found at once), and at most _ROUTE_CACHE_MAX of them (only ids the registry
# holds can get in, and the whole map is dropped when full: cheap, and the next delivery reads again).
_route_cache: dict[tuple[str, str], WebhookSubscription] = {}
_ROUTE_CACHE_MAX = 10_000


def subscription_route_cached(*, provider: str, external_id: str, fresh: bool = False) -> WebhookSubscription | None:
    """`subscription_by_external_id`, answered from process memory when this process has read the
    channel before; `fresh=True` reads it again (and remembers what it read).

    Not invalidated when the registry changes (a renewal or a disconnect is written by another
    process), and it need not be: a route uses a held channel only to decide, and records its
    decision with services.delivery_accept_if_current, whose insert happens only if the registry row
    is still the one held. When it is not, or when the held row makes the route reject a delivery,
    the route reads again with `fresh=True` and decides on the row as it is. So what is held saves a
    round trip per delivery and never changes a verdict (Graph's route, mail/webhooks/graph.py).
    """
    key = (provider, external_id)
    channel = None if fresh else _route_cache.get(key)
    if channel is None:
        channel = subscription_by_external_id(provider=provider, external_id=external_id)
        if channel is None:
            _route_cache.pop(key, None)
            return None
        if len(_route_cache) >= _ROUTE_CACHE_MAX:
            _route_cache.clear()
        _route_cache[key] = channel
    return channel


def subscription_for_connection(*, provider: str, connection_id) -> WebhookSubscription | None:
    return next(iter(WebhookSubscription._base_manager.filter(provider=provider, connection_id=connection_id)[:1]),
                None)


__all__ = ["Provider", "deliveries_recent_for_account", "subscription_by_external_id",
           "subscription_for_connection", "subscription_route_cached", "subscriptions_for_account"]
