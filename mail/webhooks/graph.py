"""`POST /webhooks/graph`: Microsoft Graph change and lifecycle notifications.

Graph does not sign basic notifications. What authenticates an item is the `clientState` we chose
at random for its subscription (mail/sync/push.py) and Graph echoes: it is compared, in constant time,
with the keyed hash the registry holds, for *every* item of a batch (a batch may mix
subscriptions). Order per item: the subscription id must be one we hold (else dropped as
`unknown_subscription`), the clientState must match (else `bad_signature`), then freshness (no
delivery for a subscription whose registered expiry has passed: Graph sends none; no expiry beyond
Graph's cap), then the ledger insert of a digest of the item (Graph retries resend the same item,
which is then a `replay`). The subscription is read once per process and held (`_accept_item`):
an item for a subscription held already costs one round trip, the insert, which goes in only if
the registry row is still the one held.

Accepted items are grouped per mailbox and action and queued as one
`mail.tasks.webhook_process(ledger ids, owner, connection, action)`: change notifications and
`missed` queue a delta sync; `reauthorizationRequired` and `subscriptionRemoved` reopen the
subscription (renew, or create anew) and sync.

The validation handshake: on creating a subscription Graph POSTs `?validationToken=…` and wants it
back as text/plain with 200 within 10 seconds. Answered before anything else, with the token only.

Answers, with empty bodies: 202 for every well-formed batch whatever its items' fates (no reason
is given, and Graph stops retrying), 400 for a malformed one, 429 over the failure budget.
"""

import hashlib
import json
import re
from collections import defaultdict
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.http import HttpResponse
from django.utils import timezone

from aiemaily.webhooks.http import (
    Rejected,
    client_address,
    count_failure,
    empty,
    read_body,
    throttled,
    webhook_endpoint,
)
from aiemaily.webhooks.models import Provider, Verdict
from aiemaily.webhooks.selectors import subscription_route_cached
from aiemaily.webhooks.services import delivery_accept, delivery_accept_if_current, delivery_reject, secret_matches
from mail.webhooks.gmail import queue_processing

CONTENT_TYPES = frozenset({"application/json"})
MAX_ITEMS = 1000
CAP = timedelta(minutes=4230)
SLACK = timedelta(minutes=5)
LIFECYCLE_ACTIONS = {"reauthorizationRequired": "reopen", "subscriptionRemoved": "reopen", "missed": "resync"}
UNAUTHENTIC = frozenset({Verdict.MALFORMED, Verdict.UNKNOWN_SUBSCRIPTION, Verdict.BAD_SIGNATURE})
CHANGE_TYPES = frozenset({"created", "updated", "deleted"})
_SUBSCRIPTION_ID = re.compile(r"^[0-9A-Za-z-]{1,128}$")
# Printable ASCII without markup characters: the token is echoed, and must never become HTML.
_VALIDATION_TOKEN = re.compile(r"[\x20-\x7e]{1,1024}")
_MARKUP = frozenset("<>&\"'")


def _time(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else None


def item_digest(item: dict) -> str:
    """The ledger id of one item: a digest of what Graph sent, without the clientState."""
    canonical = json.dumps({k: v for k, v in item.items() if k != "clientState"}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=True)
    return "g_" + hashlib.sha256(canonical.encode()).hexdigest()


def parse(raw: bytes) -> list[dict]:
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        raise Rejected(Verdict.MALFORMED, 400) from None
    items = payload.get("value") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items or len(items) > MAX_ITEMS or not all(isinstance(i, dict)
                                                                                    for i in items):
        raise Rejected(Verdict.MALFORMED, 400)
    return items


def check_item(item: dict, now: datetime, *, fresh: bool = False):
    """(subscription, action) for an authentic, fresh item; Rejected (status unused) otherwise.

    Decided on the subscription as this process last read it, unless `fresh` (see `_accept_item`)."""
    subscription_id = item.get("subscriptionId")
    kind = item.get("lifecycleEvent") or item.get("changeType")
    if not isinstance(subscription_id, str) or not _SUBSCRIPTION_ID.fullmatch(subscription_id):
        raise Rejected(Verdict.MALFORMED, 0, kind=kind)
    channel = subscription_route_cached(provider=Provider.GRAPH, external_id=subscription_id, fresh=fresh)
    if channel is None:
        raise Rejected(Verdict.UNKNOWN_SUBSCRIPTION, 0, delivery_id=subscription_id, kind=kind)
    if not secret_matches(item.get("clientState"), channel.secret_hash):
        raise Rejected(Verdict.BAD_SIGNATURE, 0, delivery_id=subscription_id, kind=kind,
                       account_id=channel.account_id)
    if channel.expires_at is not None and channel.expires_at + SLACK < now:
        raise Rejected(Verdict.STALE, 0, delivery_id=subscription_id, kind=kind, account_id=channel.account_id)
    expiry = _time(item.get("subscriptionExpirationDateTime"))
    if expiry is not None and expiry > now + CAP + SLACK:
        raise Rejected(Verdict.FUTURE, 0, delivery_id=subscription_id, kind=kind, account_id=channel.account_id)
    if item.get("lifecycleEvent") in LIFECYCLE_ACTIONS:
        action = LIFECYCLE_ACTIONS[item["lifecycleEvent"]]
    elif "lifecycleEvent" not in item and item.get("changeType") in CHANGE_TYPES:
        action = "sync"
    else:
        raise Rejected(Verdict.MALFORMED, 0, delivery_id=subscription_id, kind=kind, account_id=channel.account_id)
    return channel, action, kind


def _handshake(token: str) -> HttpResponse:
    if not _VALIDATION_TOKEN.fullmatch(token) or _MARKUP & set(token):
        return empty(400)
    response = HttpResponse(token, content_type="text/plain; charset=utf-8", status=200)
    response["X-Content-Type-Options"] = "nosniff"
    return response


# Verdicts that depend on what the registry holds for a known subscription (its secret hash, its
# expiry): decided on a held row, they are checked again on the row as it is now before they stand.
_HELD_ROW_VERDICTS = frozenset({Verdict.BAD_SIGNATURE, Verdict.STALE})


def _accept_item(item: dict, now: datetime):
    """(subscription, action, Recorded) for an item that passes `check_item`; Rejected otherwise.

    One round trip for the usual item: the subscription comes from this process's memory (read once
    per subscription), its clientState is compared with the held hash in constant time in
    `check_item`, and the ledger insert happens only if the registry row is still the one held
    (services.delivery_accept_if_current). When it is not (renewed, retired, re-keyed, deleted), or
    the item is a replay, or the held row would reject the item, the subscription is read again and
    the item decided on that, exactly as without the memory: a held row never changes a verdict.
    """
    delivery_id = item_digest(item)
    try:
        channel, action, kind = check_item(item, now)
    except Rejected as rejected:
        if rejected.verdict not in _HELD_ROW_VERDICTS:
            raise
    else:
        recorded = delivery_accept_if_current(provider=Provider.GRAPH, channel=channel, delivery_id=delivery_id,
                                              kind=kind)
        if recorded is not None:
            return channel, action, recorded
    channel, action, kind = check_item(item, now, fresh=True)
    recorded = delivery_accept(provider=Provider.GRAPH, delivery_id=delivery_id, kind=kind,
                               account_id=channel.account_id)
    return channel, action, recorded


def _record_batch(items: list[dict], ip: str) -> bool:
    """Check, record and queue every item of an authenticated-shape batch (see the module docstring).

    False when a forged item took the sender past its failure budget: the items after it are left
    unrecorded and the answer is 429 (Graph retries the batch; what was accepted is then a replay)."""
    now = timezone.now()
    work: dict[tuple, list] = defaultdict(list)
    stopped = False
    for item in items:
        try:
            channel, action, recorded = _accept_item(item, now)
        except Rejected as rejected:
            forged = rejected.verdict == Verdict.BAD_SIGNATURE or (
                rejected.verdict in UNAUTHENTIC and rejected.account_id is None)
            # A forger's cost. An authenticated item (stale, future, an odd type) costs nothing:
            # it came from Graph, whose addresses must keep their budget.
            if forged and count_failure(Provider.GRAPH, ip):
                stopped = True
                break
            delivery_reject(provider=Provider.GRAPH, verdict=rejected.verdict, delivery_id=rejected.delivery_id,
                            kind=rejected.kind, account_id=rejected.account_id, client_ip=ip)
            continue
        if recorded.accepted:
            work[(channel.account_id, channel.connection_id, action)].append(recorded.delivery.pk)
    for (owner_id, connection_id, action), ledger_ids in work.items():
        queue_processing(ledger_ids, owner_id, connection_id, action)
    return not stopped


# The transaction is the view's own (see webhook_endpoint): a batch of several items is recorded in
# one, so an error halfway leaves none of it accepted-but-unqueued and Graph's retry finds no replay;
# a batch of one (Graph's usual) writes one ledger row, and its hand-off follows that row's commit,
# so BEGIN and COMMIT would be two round trips buying nothing.
@webhook_endpoint(atomic=False)
def graph_webhook(request):
    ip = client_address(request)
    if throttled(Provider.GRAPH, ip):
        return empty(429)
    if "validationToken" in request.GET:
        return _handshake(request.GET["validationToken"])
    try:
        raw = read_body(request, limit=settings.AIEMAILY_WEBHOOK_GRAPH_MAX_BYTES, content_types=CONTENT_TYPES,
                        malformed_status=400)
        items = parse(raw)
    except Rejected as rejected:
        if count_failure(Provider.GRAPH, ip):
            return empty(429)
        delivery_reject(provider=Provider.GRAPH, verdict=rejected.verdict, client_ip=ip)
        return empty(rejected.status)
    with transaction.atomic() if len(items) > 1 else nullcontext():
        within_budget = _record_batch(items, ip)
    return empty(202 if within_budget else 429)
