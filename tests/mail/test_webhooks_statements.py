"""The one-statement recording of Gmail pushes and Graph items (aiemaily/webhooks/services.py):
the same verdicts as the step-by-step way, fewer round trips, and the rules kept under concurrency
(a push accepted once, the cursor never moving backwards) and when a held Graph subscription is out
of date (renewed, retired, re-keyed, deleted: never a different verdict).
"""

import json
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection as default_connection
from django.db import connections, transaction
from django.test import Client
from django.utils import timezone

from aiemaily.webhooks import services
from aiemaily.webhooks.models import WebhookDelivery, WebhookSubscription
from aiemaily.webhooks.selectors import subscription_route_cached
from aiemaily.webhooks.services import (
    address_digest,
    delivery_accept_if_current,
    push_record,
    secret_digest,
    subscription_forget,
    subscription_renewed,
    subscription_retire,
    subscription_store,
)
from tests.harness.factories import UserFactory
from tests.harness.webhook_helpers import handed, verdicts

__all__ = ["handed"]

pytestmark = pytest.mark.django_db(databases=["default", "vault"])


def _rows():
    return WebhookDelivery.objects.unscoped(reason="test")


def _channel(user, *, address=None, expires_at=None):
    address = address or f"{uuid.uuid4().hex[:12]}@gmail.test"
    subscription_store(provider="gmail", external_id=address_digest(address), account_id=user.pk,
                       connection_id=uuid.uuid4(), expires_at=expires_at)
    return address


def _cursor(address):
    return WebhookSubscription.objects.unscoped(reason="test").get(external_id=address_digest(address)).cursor


def _both_ways():
    """push_record as each database runs it: on PostgreSQL the one statement, and the steps that
    SQLite runs (on this same database), so the two are held to the same verdicts."""
    ways = [pytest.param(push_record, id="as-this-database-does")]
    if default_connection.vendor == "postgresql":
        def in_steps(**kwargs):
            return services._push_record_in_steps(default_connection, now=timezone.now(), **kwargs)
        ways.append(pytest.param(in_steps, id="in-steps"))
    return ways


def _push(record, address, message_id, position):
    return record(provider="gmail", external_id=address_digest(address), delivery_id=message_id, kind="push",
                  position=position)


# --- Gmail: push_record ---------------------------------------------------------------------------

@pytest.mark.sqlite_smoke
@pytest.mark.claim("webhook-replay")
@pytest.mark.parametrize("record", _both_ways())
def test_a_push_is_accepted_once_and_moves_the_cursor_only_forward(record, user):
    address = _channel(user)
    first = _push(record, address, "m1", 5000)
    assert first.recorded.accepted and first.advanced and first.channel.account_id == user.pk
    assert first.recorded.delivery.processed_at is None  # open: the route hands it over
    replay = _push(record, address, "m1", 5000)
    assert not replay.recorded.accepted and not replay.advanced
    older = _push(record, address, "m2", 4990)  # accepted, settled at once, the cursor left alone
    same = _push(record, address, "m3", 5000)
    assert older.recorded.accepted and not older.advanced and same.recorded.accepted and not same.advanced
    newer = _push(record, address, "m4", 5001)
    assert newer.recorded.accepted and newer.advanced
    assert _cursor(address) == 5001
    assert verdicts("gmail") == ["accepted", "replay", "accepted", "accepted", "accepted"]
    open_rows = set(_rows().filter(verdict="accepted", processed_at__isnull=True).values_list("delivery_id", flat=True))
    assert open_rows == {"m1", "m4"}


@pytest.mark.sqlite_smoke
@pytest.mark.parametrize("record", _both_ways())
def test_a_push_for_an_unknown_or_expired_channel_writes_nothing(record, user):
    unknown = _push(record, "nobody@gmail.test", "u1", 10)
    assert unknown.channel is None and unknown.recorded is None
    address = _channel(user, expires_at=timezone.now() - timedelta(minutes=1))
    stale = _push(record, address, "s1", 10)
    assert stale.channel is not None and stale.recorded is None and not stale.advanced
    assert not _rows().exists() and _cursor(address) is None


@pytest.mark.skipif("default_connection.vendor != 'postgresql'")
def test_an_accepted_push_is_one_round_trip_and_a_replay_two(user, django_assert_num_queries):
    address = _channel(user)
    with django_assert_num_queries(1):
        assert _push(push_record, address, "r1", 1).advanced
    with django_assert_num_queries(1):
        assert _push(push_record, address, "r2", 1).recorded.accepted  # not newer: settled in the same statement
    with django_assert_num_queries(2):  # the statement, then the replay's own ledger row
        assert not _push(push_record, address, "r1", 1).recorded.accepted


@pytest.mark.django_db(transaction=True, databases=["default", "vault"])
@pytest.mark.claim("webhook-replay")
def test_concurrent_pushes_are_accepted_once_and_the_cursor_never_moves_backwards():
    user = UserFactory()
    address = _channel(user)
    pushes = [(f"c{n}", 1000 + n) for n in range(60)]
    deliveries = pushes + pushes[:30]  # 30 copies of pushes delivered twice
    random.Random(11).shuffle(deliveries)
    seen, done = [], threading.Event()

    def watch():  # what any reader sees of the cursor while the pushes race: never a lower value
        try:
            while not done.is_set():
                seen.append(_cursor(address))
        finally:
            connections.close_all()

    def deliver(push):
        try:
            return _push(push_record, address, *push)
        finally:
            connections.close_all()

    locked, release = threading.Event(), threading.Event()

    def hold_the_channel():  # the first pushes all read the cursor, insert, then queue on its row
        try:
            with transaction.atomic():
                WebhookSubscription.objects.unscoped(reason="test").select_for_update().get(
                    external_id=address_digest(address))
                locked.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder, watcher = threading.Thread(target=hold_the_channel), threading.Thread(target=watch)
    holder.start()
    assert locked.wait(30)
    watcher.start()
    try:
        with ThreadPoolExecutor(8) as pool:
            pending = pool.map(deliver, deliveries)
            time.sleep(1)  # eight pushes are now waiting for the row, each sure its position is newer
            release.set()
            results = list(pending)
    finally:
        release.set()
        done.set()
        watcher.join()
        holder.join()
    values = [value for value in seen if value is not None]
    assert values == sorted(values)
    assert _cursor(address) == 1059
    assert sum(r.recorded.accepted for r in results) == 60 and verdicts("gmail").count("replay") == 30
    # Every accepted push is handed over (it moved the cursor) or settled, never both, never neither.
    advanced = {str(r.recorded.delivery.pk) for r in results if r.advanced}
    settled = set(map(str, _rows().filter(verdict="accepted", processed_at__isnull=False).values_list("pk", flat=True)))
    accepted = set(map(str, _rows().filter(verdict="accepted").values_list("pk", flat=True)))
    assert advanced | settled == accepted and not advanced & settled
    assert any(r.advanced and r.recorded.delivery.delivery_id == "c59" for r in results)


# --- Graph: a held subscription --------------------------------------------------------------------

def _graph_subscription(user, client_state, *, subscription_id=None, expires_at=None):
    subscription_id = subscription_id or str(uuid.uuid4())
    subscription_store(provider="graph", external_id=subscription_id, account_id=user.pk, connection_id=uuid.uuid4(),
                       secret_hash=secret_digest(client_state), expires_at=expires_at)
    return subscription_id


def _post(subscription_id, client_state, message="AAMk1"):
    item = {"subscriptionId": subscription_id, "changeType": "created", "clientState": client_state,
            "resource": f"Users/x/Messages/{message}-{uuid.uuid4().hex}", "resourceData": {"id": message}}
    response = Client().post("/webhooks/graph", json.dumps({"value": [item]}), content_type="application/json",
                             REMOTE_ADDR="2001:db8:77::1")
    assert response.status_code == 202


def _notify(subscription_id, client_state):
    """The verdict the ledger records for one notification."""
    _post(subscription_id, client_state)
    return verdicts("graph")[-1]


@pytest.mark.skipif("default_connection.vendor != 'postgresql'")
def test_a_graph_item_for_a_subscription_read_before_is_one_round_trip(user, handed, django_assert_num_queries,
                                                                      django_capture_on_commit_callbacks):
    subscription_id = _graph_subscription(user, "state-" + "a" * 40)
    with django_capture_on_commit_callbacks(execute=True):
        with django_assert_num_queries(2):  # read the subscription, then the ledger insert
            _post(subscription_id, "state-" + "a" * 40)
        with django_assert_num_queries(1):  # held: the insert alone, which checks the row is still the one held
            _post(subscription_id, "state-" + "a" * 40)
    assert verdicts("graph") == ["accepted", "accepted"] and len(handed.ledger_ids()) == 2


@pytest.mark.claim("webhook-authenticity")
def test_a_held_subscription_never_changes_a_verdict(user, handed, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        _a_held_subscription_never_changes_a_verdict(user)
    assert len(handed.ledger_ids()) == 3


def _a_held_subscription_never_changes_a_verdict(user):
    state, new_state = "state-" + "b" * 40, "state-" + "c" * 40
    subscription_id = _graph_subscription(user, state, expires_at=timezone.now() + timedelta(days=2))
    assert _notify(subscription_id, state) == "accepted"  # now held by this process
    # Renewed elsewhere: still accepted (the held expiry is out of date, the row is read again).
    subscription_renewed(subscription_id=WebhookSubscription.objects.unscoped(reason="test").get(
        external_id=subscription_id).pk, expires_at=timezone.now() + timedelta(days=3))
    assert _notify(subscription_id, state) == "accepted"
    # Re-keyed under the same id: the old clientState is refused, the new one accepted.
    _graph_subscription(user, new_state, subscription_id=subscription_id)
    assert _notify(subscription_id, state) == "bad_signature"
    assert _notify(subscription_id, new_state) == "accepted"
    # Retired (the mailbox disconnected): stale, not accepted.
    row = WebhookSubscription.objects.unscoped(reason="test").get(external_id=subscription_id)
    subscription_retire(provider="graph", connection_id=row.connection_id)
    assert _notify(subscription_id, new_state) == "stale"
    # Deleted: unknown, and nothing of it is held any more.
    subscription_forget(provider="graph", connection_id=row.connection_id)
    assert _notify(subscription_id, new_state) == "unknown_subscription"
    assert subscription_route_cached(provider="graph", external_id=subscription_id) is None


@pytest.mark.sqlite_smoke
def test_the_ledger_insert_goes_in_only_for_the_registry_row_as_read(user):
    subscription_id = _graph_subscription(user, "state-" + "d" * 40, expires_at=timezone.now() + timedelta(days=1))
    held = subscription_route_cached(provider="graph", external_id=subscription_id, fresh=True)
    first = delivery_accept_if_current(provider="graph", channel=held, delivery_id="g_1", kind="created")
    assert first is not None and first.accepted and first.delivery.account_id == user.pk
    assert delivery_accept_if_current(provider="graph", channel=held, delivery_id="g_1", kind="created") is None
    subscription_renewed(subscription_id=held.pk, expires_at=timezone.now() + timedelta(days=2))
    assert delivery_accept_if_current(provider="graph", channel=held, delivery_id="g_2", kind="created") is None
    again = subscription_route_cached(provider="graph", external_id=subscription_id, fresh=True)
    assert delivery_accept_if_current(provider="graph", channel=again, delivery_id="g_2", kind="created").accepted
    no_expiry = subscription_route_cached(provider="graph", external_id=_graph_subscription(user, "state-e"),
                                          fresh=True)
    assert delivery_accept_if_current(provider="graph", channel=no_expiry, delivery_id="g_3", kind="created").accepted
    assert sorted(_rows().values_list("delivery_id", flat=True)) == ["g_1", "g_2", "g_3"]


# Every column the held row is compared on, changed under a channel this process holds: the insert
# must not go in (on PostgreSQL inside webhooks_accept_if_current, elsewhere the statement built here).
# The expiry both ways, since NULL is compared differently from a value.
_LATER = timedelta(days=1)


@pytest.mark.sqlite_smoke
@pytest.mark.parametrize(("read_expiry", "changes"), [
    pytest.param(True, lambda: {"expires_at": None}, id="expiry-to-none"),
    pytest.param(False, lambda: {"expires_at": timezone.now() + _LATER}, id="none-to-expiry"),
    pytest.param(True, lambda: {"expires_at": timezone.now() + 2 * _LATER}, id="expiry-moved"),
    pytest.param(False, lambda: {"account_id": UserFactory().pk}, id="owner"),
    pytest.param(False, lambda: {"connection_id": uuid.uuid4()}, id="mailbox"),
    pytest.param(False, lambda: {"secret_hash": secret_digest("state-other")}, id="secret"),
])
def test_a_held_channel_whose_registry_row_changed_records_nothing(user, read_expiry, changes):
    subscription_id = _graph_subscription(user, "state-" + "f" * 40,
                                          expires_at=timezone.now() + _LATER if read_expiry else None)
    held = subscription_route_cached(provider="graph", external_id=subscription_id, fresh=True)
    WebhookSubscription.objects.unscoped(reason="test").filter(pk=held.pk).update(**changes())
    assert delivery_accept_if_current(provider="graph", channel=held, delivery_id="g_changed", kind="created") is None
    assert not _rows().exists()
    # Read again, the same item goes in: only the out-of-date copy was refused.
    again = subscription_route_cached(provider="graph", external_id=subscription_id, fresh=True)
    assert delivery_accept_if_current(provider="graph", channel=again, delivery_id="g_changed", kind="created")
