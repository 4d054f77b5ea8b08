"""/webhooks/graph: Microsoft Graph change and lifecycle notifications, with the real clientState of
subscriptions made through the local Graph (tests/harness/graph_api_server.py) by the real client code;
the validation handshake as Graph sends it; a clientState compared for every item of a batch;
unknown subscriptions dropped; deduplicated per item; a delta sync queued per mailbox.
Subscriptions: created under the 4,230-minute cap, renewed, recreated when gone, retired on disconnect.
"""

import json
import random
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from django.test import Client
from django.utils import timezone

from aiemaily.webhooks.models import WebhookDelivery, WebhookSubscription
from aiemaily.webhooks.services import secret_digest
from mail.models import Connection
from mail.sync import push
from mail.tasks import push_open, webhook_process
from tests.harness.oauth_flow import browser, microsoft, microsoft_server, sent
from tests.harness.webhook_helpers import disconnect, dropped_log, handed, leased_run, record_chains, verdicts
from tests.mail.test_sync_gmail import lease_for, make_connection, objects_dir
from tests.mail.test_sync_graph import graph, graph_server

__all__ = ["browser", "graph", "graph_server", "handed", "microsoft", "microsoft_server", "objects_dir", "sent"]

pytestmark = pytest.mark.django_db(databases=["default", "vault"])

NOTIFY = "https://aiemaily.test/webhooks/graph"


@pytest.fixture
def ip():
    return f"2001:db8:7::{uuid.uuid4().hex[:4]}"


@pytest.fixture
def push_settings(settings):
    settings.AIEMAILY_GRAPH_NOTIFICATION_URL = NOTIFY
    return settings


def subscribe(graph, user, connection=None) -> tuple[Connection, str]:
    """A Microsoft mailbox whose subscription was made through the local Graph by mail/sync/push.py."""
    connection = connection or make_connection(user, provider="microsoft")
    result = push_open(lease_for(user.pk, connection.pk, graph.token), owner_id=str(user.pk),
                       connection_id=str(connection.pk))
    assert result["status"] == "subscribed", result
    [subscription_id] = [s for s, sub in graph.subscriptions.items() if sub["notificationUrl"] == NOTIFY
                         and WebhookSubscription.objects.unscoped(reason="test").filter(external_id=s).exists()][-1:]
    return connection, subscription_id


@pytest.fixture
def subscribed(graph, user, push_settings):
    return subscribe(graph, user)


def post(items, ip, content_type="application/json", client=None, raw: bytes | None = None):
    body = raw if raw is not None else json.dumps({"value": items}).encode()
    return (client or Client()).post("/webhooks/graph", body, content_type=content_type, REMOTE_ADDR=ip)


@pytest.mark.claim("webhook-authenticity")
def test_the_validation_handshake_echoes_the_token_as_plain_text(ip, push_settings):
    token = "Validation: Testing client application reachability for subscription Request-Id: 1c7e"
    response = Client().post(f"/webhooks/graph?validationToken={requests.utils.quote(token)}", b"",
                             content_type="text/plain", REMOTE_ADDR=ip)
    assert response.status_code == 200 and response.content.decode() == token
    assert response["Content-Type"].startswith("text/plain") and response["X-Content-Type-Options"] == "nosniff"
    assert WebhookDelivery.objects.unscoped(reason="test").count() == 0
    # Markup or control characters are not reflected.
    bad = Client().post("/webhooks/graph?validationToken=%3Cscript%3E%0a", b"", content_type="text/plain",
                        REMOTE_ADDR=ip)
    assert bad.status_code == 400 and bad.content == b""


@pytest.mark.claim("webhook-authenticity")
def test_a_notification_with_the_right_client_state_queues_one_delta_sync(graph, subscribed, handed, ip,
                                                                          django_capture_on_commit_callbacks):
    connection, subscription_id = subscribed
    items = [graph.notification(subscription_id, f"AAMkMsg{n}") for n in range(3)]
    with django_capture_on_commit_callbacks(execute=True):
        response = post(items, ip)
    assert response.status_code == 202 and response.content == b""
    rows = list(WebhookDelivery.objects.unscoped(reason="test").order_by("received_at"))
    assert [(r.provider, r.verdict, r.kind, r.account_id) for r in rows] == [
        ("graph", "accepted", "created", connection.owner_id)] * 3
    # The clientState is nowhere in the ledger or the registry, in clear.
    state = graph.subscriptions[subscription_id]["clientState"]
    assert state not in str(list(WebhookDelivery.objects.unscoped(reason="test").values()))
    assert state not in str(list(WebhookSubscription.objects.unscoped(reason="test").values()))
    assert WebhookSubscription.objects.unscoped(reason="test").get().secret_hash == secret_digest(state)
    # One hand-off for the mailbox, carrying the three ledger ids.
    [(ledger_ids, owner_id, connection_id, action)] = handed.processing()
    assert sorted(ledger_ids) == sorted(str(r.pk) for r in rows)
    assert (owner_id, connection_id, action) == (str(connection.owner_id), str(connection.pk), "sync")


@pytest.mark.claim("webhook-replay")
def test_a_redelivered_notification_is_a_replay(graph, subscribed, handed, ip, django_capture_on_commit_callbacks):
    _, subscription_id = subscribed
    item = graph.notification(subscription_id, "AAMkMsg1")
    with django_capture_on_commit_callbacks(execute=True):
        assert post([item], ip).status_code == 202
        assert post([item], ip).status_code == 202
        assert post([item, item], ip).status_code == 202
    assert verdicts("graph") == ["accepted", "replay", "replay", "replay"]
    assert len(handed.ledger_ids()) == 1


@pytest.mark.claim("webhook-authenticity")
def test_every_item_of_a_batch_is_checked(graph, subscribed, handed, ip, caplog, django_capture_on_commit_callbacks):
    _, subscription_id = subscribed
    good = graph.notification(subscription_id, "AAMkGood")
    forged = graph.notification(subscription_id, "AAMkForged", client_state="guessed-" + "x" * 40)
    missing = {k: v for k, v in graph.notification(subscription_id, "AAMkNone").items() if k != "clientState"}
    stranger = {**graph.notification(subscription_id, "AAMkOther"), "subscriptionId": str(uuid.uuid4())}
    with django_capture_on_commit_callbacks(execute=True):
        assert post([forged, good, missing, stranger], ip).status_code == 202
    assert verdicts("graph") == ["bad_signature", "accepted", "bad_signature", "unknown_subscription"]
    assert len(handed.ledger_ids()) == 1
    assert dropped_log(caplog) == ["bad_signature", "bad_signature", "unknown_subscription"]


@pytest.mark.claim("webhook-authenticity")
@pytest.mark.parametrize(
    ("case", "verdict", "status"),
    [
        ("wrong client state", "bad_signature", 202),
        ("client state of another subscription", "bad_signature", 202),
        ("client state not a string", "bad_signature", 202),
        ("unknown subscription", "unknown_subscription", 202),
        ("stale: the subscription expired", "stale", 202),
        ("future: beyond Graph's cap", "future", 202),
        ("unknown change type", "malformed", 202),
        ("unknown lifecycle event", "malformed", 202),
        ("not json", "malformed", 400),
        ("truncated", "malformed", 400),
        ("no value list", "malformed", 400),
        ("empty batch", "malformed", 400),
        ("items not objects", "malformed", 400),
        ("oversized", "malformed", 400),
        ("wrong content type", "malformed", 400),
    ],
)
def test_a_notification_that_is_not_authentic_fresh_and_well_formed_is_dropped(
        case, verdict, status, graph, subscribed, user, handed, ip, settings, caplog,
        django_capture_on_commit_callbacks):
    connection, subscription_id = subscribed
    item = graph.notification(subscription_id, "AAMkTarget")
    raw, content_type = None, "application/json"
    if case == "wrong client state":
        item["clientState"] = item["clientState"][:-1] + ("A" if item["clientState"][-1] != "A" else "B")
    elif case == "client state of another subscription":
        _, other = subscribe(graph, user)
        item["clientState"] = graph.subscriptions[other]["clientState"]
    elif case == "client state not a string":
        item["clientState"] = {"$ne": None}
    elif case == "unknown subscription":
        item["subscriptionId"] = str(uuid.uuid4())
    elif case == "stale: the subscription expired":
        WebhookSubscription.objects.unscoped(reason="test").filter(external_id=subscription_id).update(
            expires_at=timezone.now() - timezone.timedelta(hours=2))
    elif case == "future: beyond Graph's cap":
        item["subscriptionExpirationDateTime"] = (timezone.now() + timezone.timedelta(days=30)).isoformat()
    elif case == "unknown change type":
        item["changeType"] = "exploded"
    elif case == "unknown lifecycle event":
        item["lifecycleEvent"] = "selfDestruct"
    elif case == "not json":
        raw = b"AAMkTarget is not json"
    elif case == "truncated":
        raw = json.dumps({"value": [item]}).encode()[:-5]
    elif case == "no value list":
        raw = json.dumps(item).encode()
    elif case == "empty batch":
        raw = b'{"value": []}'
    elif case == "items not objects":
        raw = b'{"value": ["AAMkTarget"]}'
    elif case == "oversized":
        settings.AIEMAILY_WEBHOOK_GRAPH_MAX_BYTES = 1024
        raw = json.dumps({"value": [item] * 10}).encode()
    elif case == "wrong content type":
        content_type = "text/plain"
    with django_capture_on_commit_callbacks(execute=True):
        response = post([item], ip, content_type=content_type, raw=raw)
    assert response.status_code == status and response.content == b""  # no reason given
    assert [v for v in verdicts("graph")] == [verdict]
    assert handed.calls == []  # nothing queued
    assert dropped_log(caplog) == [verdict]
    assert all("AAMkTarget" not in r.getMessage() for r in caplog.records)  # no payload in logs


def test_lifecycle_events_reopen_or_resync(graph, subscribed, handed, ip, django_capture_on_commit_callbacks):
    connection, subscription_id = subscribed
    with django_capture_on_commit_callbacks(execute=True):
        for event in ("reauthorizationRequired", "subscriptionRemoved", "missed"):
            assert post([graph.lifecycle(subscription_id, event)], ip).status_code == 202
    # One action per delivery (the relay may carry deliveries of one mailbox and action in one message).
    assert sorted(args[3] for args in handed.processing() for _ in args[0]) == ["reopen", "reopen", "resync"]
    assert verdicts("graph") == ["accepted"] * 3


@pytest.mark.claim("webhook-authenticity")
def test_a_flood_of_forged_client_states_is_throttled_without_touching_graph(graph, subscribed, handed, settings,
                                                                             django_capture_on_commit_callbacks):
    settings.AIEMAILY_WEBHOOK_FAILURE_LIMIT = 10
    _, subscription_id = subscribed
    attacker, graph_ip = f"2001:db8:bad::{uuid.uuid4().hex[:4]}", f"2001:db8:8::{uuid.uuid4().hex[:4]}"
    statuses, genuine = [], []
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(30):
            forged = graph.notification(subscription_id, f"AAMkF{n}", client_state="x" * 64)
            statuses.append(post([forged], attacker).status_code)
            if n % 3 == 0:
                genuine.append(post([graph.notification(subscription_id, f"AAMkG{n}")], graph_ip).status_code)
    assert statuses[:10] == [202] * 10 and set(statuses[10:]) == {429}
    assert genuine == [202] * 10 and len(handed.ledger_ids()) == 10


def test_graphs_own_stale_items_do_not_spend_its_failure_budget(graph, subscribed, handed, ip, settings,
                                                                 django_capture_on_commit_callbacks):
    settings.AIEMAILY_WEBHOOK_FAILURE_LIMIT = 3
    connection, subscription_id = subscribed
    late = [graph.notification(subscription_id, f"AAMkLate{n}") for n in range(5)]
    WebhookSubscription.objects.unscoped(reason="test").update(expires_at=timezone.now() - timezone.timedelta(hours=1))
    assert post(late, ip).status_code == 202
    WebhookSubscription.objects.unscoped(reason="test").update(expires_at=timezone.now() + timezone.timedelta(days=2))
    with django_capture_on_commit_callbacks(execute=True):
        assert post([graph.notification(subscription_id, "AAMkOnTime")], ip).status_code == 202
    assert verdicts("graph") == ["stale"] * 5 + ["accepted"] and len(handed.ledger_ids()) == 1


def test_only_post_is_allowed_the_route_is_csrf_exempt_and_there_is_no_cors(graph, subscribed, handed, ip):
    _, subscription_id = subscribed
    client = Client(enforce_csrf_checks=True)
    assert client.get("/webhooks/graph", REMOTE_ADDR=ip).status_code == 405
    assert client.get("/webhooks/graph?validationToken=abc", REMOTE_ADDR=ip).status_code == 405
    response = client.options("/webhooks/graph", REMOTE_ADDR=ip, HTTP_ORIGIN="https://evil.example",
                              HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
    assert response.status_code == 405 and "Access-Control-Allow-Origin" not in response
    assert post([graph.notification(subscription_id, "AAMkC")], ip, client=client).status_code == 202


@pytest.mark.django_db(transaction=True, databases=["default", "vault"])
@pytest.mark.claim("webhook-replay")
def test_a_concurrent_burst_with_duplicates_is_processed_exactly_once(graph, user, push_settings, handed,
                                                                       live_server):
    connection, subscription_id = subscribe(graph, user)
    bodies = [json.dumps({"value": [graph.notification(subscription_id, f"AAMkBurst{n}")]}).encode()
              for n in range(700)]
    deliveries = bodies + bodies[:300]  # 1,000 deliveries, 30% of them duplicates
    random.Random(11).shuffle(deliveries)
    url = live_server.url + "/webhooks/graph"

    def deliver(body):
        return requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(deliver, deliveries))
    assert statuses == [202] * 1000
    rows = WebhookDelivery.objects.unscoped(reason="test")
    assert rows.filter(verdict="accepted").count() == 700 and rows.filter(verdict="replay").count() == 300
    queued = handed.ledger_ids()
    assert len(queued) == 700 == len(set(queued))
    assert set(queued) == set(map(str, rows.filter(verdict="accepted").values_list("pk", flat=True)))
    # Processing claims each ledger id once, whoever runs the task and however often.
    claims = [webhook_process(*args) for args in handed.processing()] + [webhook_process(*handed.processing()[0])]
    assert claims[-1]["status"] == "already_processed"
    assert rows.filter(verdict="accepted", processed_at__isnull=True).count() == 0


# --- subscriptions --------------------------------------------------------------------------------

def test_subscriptions_are_created_under_the_cap_renewed_and_recreated(graph, user, push_settings):
    connection, subscription_id = subscribe(graph, user)
    sub = graph.subscriptions[subscription_id]
    assert (sub["resource"], sub["changeType"], sub["lifecycleNotificationUrl"]) == (
        "me/messages", "created,updated,deleted", NOTIFY)
    expires = timezone.datetime.fromisoformat(sub["expirationDateTime"].replace("Z", "+00:00"))
    assert timezone.now() + timezone.timedelta(minutes=4000) < expires < timezone.now() + timezone.timedelta(
        minutes=4230)
    assert len(sub["clientState"]) >= 40
    # Renewal: the same subscription, a later expiry.
    WebhookSubscription.objects.unscoped(reason="test").update(expires_at=timezone.now() + timezone.timedelta(hours=2))
    assert push.channel_due(connection)
    assert push_open(lease_for(user.pk, connection.pk, graph.token), owner_id=str(user.pk),
                     connection_id=str(connection.pk))["status"] == "renewed"
    assert list(graph.subscriptions) == [subscription_id] and not push.channel_due(connection)
    # Graph removed it (subscriptionRemoved, or it lapsed): recreated with a new clientState.
    old_state = sub["clientState"]
    graph.subscriptions.clear()
    assert push_open(lease_for(user.pk, connection.pk, graph.token), owner_id=str(user.pk),
                     connection_id=str(connection.pk))["status"] == "subscribed"
    [new_id] = graph.subscriptions
    channel = WebhookSubscription.objects.unscoped(reason="test").get()
    assert channel.external_id == new_id != subscription_id
    assert graph.subscriptions[new_id]["clientState"] != old_state
    # An expiry over the cap is refused by Graph: we never ask for one.
    push_settings.AIEMAILY_GRAPH_SUBSCRIPTION_MINUTES = 99999
    graph.subscriptions.clear()
    assert push_open(lease_for(user.pk, connection.pk, graph.token), owner_id=str(user.pk),
                     connection_id=str(connection.pk))["status"] == "subscribed"


def test_graph_validates_our_endpoint_when_a_subscription_is_created(graph, user, push_settings, live_server):
    push_settings.AIEMAILY_GRAPH_NOTIFICATION_URL = live_server.url + "/webhooks/graph"
    graph.handshake = True
    connection = make_connection(user, provider="microsoft")
    result = push_open(lease_for(user.pk, connection.pk, graph.token), owner_id=str(user.pk),
                       connection_id=str(connection.pk))
    assert result["status"] == "subscribed"
    # An endpoint that does not answer the handshake gets no subscription.
    push_settings.AIEMAILY_GRAPH_NOTIFICATION_URL = live_server.url + "/healthz"
    other = make_connection(user, provider="microsoft")
    assert push_open(lease_for(user.pk, other.pk, graph.token), owner_id=str(user.pk),
                     connection_id=str(other.pk))["status"] == "error"


def test_a_disconnected_mailbox_gets_nothing_queued(graph, subscribed, user, handed, ip,
                                                    django_capture_on_commit_callbacks):
    connection, subscription_id = subscribed
    disconnect(user, connection.pk, django_capture_on_commit_callbacks, execute=False, keep_mail=True)
    with django_capture_on_commit_callbacks(execute=True):
        assert post([graph.notification(subscription_id, "AAMkLate")], ip).status_code == 202
    assert verdicts("graph") == ["stale"] and handed.calls == []


# --- end to end -----------------------------------------------------------------------------------

@pytest.mark.claim("webhook-authenticity")
def test_a_new_message_and_its_notification_appear_in_the_api_after_one_sync(
        auth_client, browser, user, graph, microsoft, sent, push_settings, handed, ip, monkeypatch,
        django_capture_on_commit_callbacks):
    """Connect at the local Microsoft (the vault holds the refresh token); the connect queues the
    subscription; it is made with a vault-leased token; a message arrives and Graph notifies; the
    processing queues exactly one delta sync; that one sync shows the message."""
    from mail.tasks import graph_sync
    from tests.mail.test_oauth_microsoft import _connect
    from tests.mail.test_sync_gmail import mail

    chains = record_chains(monkeypatch, names=True)
    graph.accepts = microsoft.access_token_valid
    with django_capture_on_commit_callbacks(execute=True):
        connection_id = _connect(auth_client, browser, microsoft, sent, django_capture_on_commit_callbacks)["id"]
    assert ["secrets_vault.tasks.oauth_access_lease", "mail.tasks.push_open"] in chains  # on connect
    assert leased_run(push_open, user, connection_id)["status"] == "subscribed"
    [subscription_id] = graph.subscriptions
    assert leased_run(graph_sync, user, connection_id)["status"] == "synced"
    assert auth_client.get("/api/v1/messages", {"connection": connection_id}).json()["results"] == []

    message_id = graph.add("inbox", mail(7))
    chains.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert post([graph.notification(subscription_id, message_id)], ip).status_code == 202
    [args] = handed.processing()
    with django_capture_on_commit_callbacks(execute=True):
        assert webhook_process(*args)["status"] == "queued"
    assert chains == [["secrets_vault.tasks.oauth_access_lease", "mail.tasks.graph_sync"]]  # one sync
    leased_run(graph_sync, user, connection_id)
    listed = auth_client.get("/api/v1/messages", {"connection": connection_id}).json()["results"]
    assert [m["subject"] for m in listed] == ["Gmail message 7"]


def test_disconnect_deletes_the_subscription_at_graph_even_with_the_mailbox_deleted(
        auth_client, browser, user, graph, microsoft, sent, push_settings, monkeypatch,
        django_capture_on_commit_callbacks):
    from mail.tasks import push_close
    from secrets_vault.tasks import oauth_close_lease, oauth_revoke
    from tests.mail.test_oauth_microsoft import _connect

    graph.accepts = microsoft.access_token_valid
    connection_id = _connect(auth_client, browser, microsoft, sent, django_capture_on_commit_callbacks)["id"]
    leased_run(push_open, user, connection_id)
    assert len(graph.subscriptions) == 1
    chains = record_chains(monkeypatch)
    disconnect(user, connection_id, django_capture_on_commit_callbacks, execute=True, keep_mail=False)
    [(close_lease, close, revoke)] = chains
    assert push_close(oauth_close_lease(*close_lease.args), *close.args)["status"] == "stopped"
    assert graph.subscriptions == {} and WebhookSubscription.objects.unscoped(reason="test").count() == 0
    assert oauth_revoke(*revoke.args)["status"] == "destroyed"
