"""/webhooks/stripe: signed exactly as Stripe signs (HMAC-SHA256 over "t.body" with the endpoint
secret, stripe-python's own generate_signature_header), verified with stripe-python, deduplicated
on the event id through the ledger, and handed to billing by ledger row id — once.

"Handed to billing" is counted where it leaves this app: the Celery sends of
billing.tasks.stripe_events_process (ledger ids, gathered by aiemaily/webhooks/handoff.py), captured
here (billing's task is tested with billing).
"""

import json
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import stripe
from django.test import Client

from aiemaily.celery import app as celery_app
from aiemaily.webhooks.models import WebhookDelivery
from tests.harness.webhook_helpers import Sent

pytestmark = [pytest.mark.django_db]

SECRET = "whsec_" + "test0secret0" * 3
OLD_SECRET = "whsec_" + "old0secret00" * 3


@pytest.fixture
def sent(monkeypatch):
    """The billing hand-offs, as Celery would send them: batches of ledger ids."""
    capture = Sent("billing.tasks.stripe_events_process")
    monkeypatch.setattr(celery_app, "send_task", capture)
    return capture


@pytest.fixture(autouse=True)
def secrets(settings):
    settings.STRIPE_WEBHOOK_SECRETS = [SECRET]
    return settings


@pytest.fixture
def ip():
    return f"2001:db8::{uuid.uuid4().hex[:4]}"


def event(event_id=None, kind="checkout.session.completed") -> bytes:
    return json.dumps({"id": event_id or f"evt_{uuid.uuid4().hex}", "object": "event", "type": kind,
                       "api_version": "2024-06-20", "created": int(time.time()), "livemode": False,
                       "data": {"object": {"id": "cs_test_1", "object": "checkout.session"}}}).encode()


def signature(body: bytes, secret=SECRET, timestamp=None) -> str:
    return stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=timestamp)


def post(body: bytes, sig: str | None, ip: str, content_type="application/json", **extra):
    headers = {"HTTP_STRIPE_SIGNATURE": sig} if sig is not None else {}
    return Client().post("/webhooks/stripe", body, content_type=content_type, REMOTE_ADDR=ip, **headers, **extra)


def verdicts():
    return list(WebhookDelivery.objects.unscoped(reason="test").order_by("received_at")
                .values_list("verdict", flat=True))


@pytest.mark.claim("webhook-authenticity")
def test_a_signed_event_is_accepted_and_handed_to_billing_once(sent, ip, django_capture_on_commit_callbacks):
    body = event("evt_1Valid")
    with django_capture_on_commit_callbacks(execute=True):
        response = post(body, signature(body), ip)
    assert response.status_code == 200 and response.content == b""
    row = WebhookDelivery.objects.unscoped(reason="test").get()
    assert (row.provider, row.delivery_id, row.kind, row.verdict) == (
        "stripe", "evt_1Valid", "checkout.session.completed", "accepted")
    assert sent.ledger_ids() == [str(row.pk)]


@pytest.mark.claim("webhook-replay")
def test_a_replayed_event_is_answered_200_and_not_handed_over_again(sent, ip, django_capture_on_commit_callbacks):
    body = event("evt_1Replayed")
    with django_capture_on_commit_callbacks(execute=True):
        assert post(body, signature(body), ip).status_code == 200
        # The same delivery again, and the same event re-signed later (Stripe's own retry).
        assert post(body, signature(body), ip).status_code == 200
        assert post(body, signature(body, timestamp=int(time.time()) - 5), ip).status_code == 200
    assert verdicts() == ["accepted", "replay", "replay"]
    assert len(sent.ledger_ids()) == 1


@pytest.mark.claim("webhook-authenticity")
def test_both_secrets_work_while_one_is_being_rolled(settings, sent, ip, django_capture_on_commit_callbacks):
    settings.STRIPE_WEBHOOK_SECRETS = [SECRET, OLD_SECRET]
    old, new = event(), event()
    # Stripe signs with every active secret during a roll: two v1 values in one header.
    both = signature(new) + "," + signature(new, OLD_SECRET).split(",")[1]
    with django_capture_on_commit_callbacks(execute=True):
        assert post(old, signature(old, OLD_SECRET), ip).status_code == 200
        assert post(new, both, ip).status_code == 200
    assert verdicts() == ["accepted", "accepted"] and len(sent.ledger_ids()) == 2


@pytest.mark.claim("webhook-authenticity")
@pytest.mark.parametrize(
    ("case", "verdict"),
    [
        ("wrong secret", "bad_signature"),
        ("tampered body", "bad_signature"),
        ("no header", "bad_signature"),
        ("garbage header", "bad_signature"),
        ("v0 only", "bad_signature"),
        ("stale", "stale"),
        ("future", "future"),
        ("not json", "malformed"),
        ("truncated", "bad_signature"),
        ("not an event", "malformed"),
        ("wrong content type", "malformed"),
        ("oversized", "malformed"),
        ("not utf-8", "malformed"),
    ],
)
def test_a_delivery_that_is_not_authentic_fresh_and_well_formed_is_dropped(case, verdict, settings, sent, ip, caplog,
                                                                          django_capture_on_commit_callbacks):
    body, content_type = event("evt_1Target"), "application/json"
    sig = signature(body)
    if case == "wrong secret":
        sig = signature(body, "whsec_" + "x" * 32)
    elif case == "tampered body":
        body = body.replace(b"cs_test_1", b"cs_test_2")
    elif case == "no header":
        sig = None
    elif case == "garbage header":
        sig = "t=abc,v1=zz"
    elif case == "v0 only":
        sig = sig.replace("v1=", "v0=")
    elif case == "stale":
        sig = signature(body, timestamp=int(time.time()) - 301)
    elif case == "future":
        sig = signature(body, timestamp=int(time.time()) + 3600)
    elif case == "not json":
        body = b"evt_1Target is not json"
        sig = signature(body)
    elif case == "truncated":
        body = body[:-7]
    elif case == "not an event":
        body = json.dumps({"id": "cus_1", "object": "customer"}).encode()
        sig = signature(body)
    elif case == "wrong content type":
        content_type = "application/x-www-form-urlencoded"
    elif case == "oversized":
        settings.AIEMAILY_WEBHOOK_STRIPE_MAX_BYTES = 512
        body = json.dumps({**json.loads(body), "padding": "x" * 600}).encode()
        sig = signature(body)
    elif case == "not utf-8":
        body = body.replace(b"cs_test_1", b"cs_\xff\xfe")
        sig = f"t={int(time.time())},v1=00"
    with django_capture_on_commit_callbacks(execute=True):
        response = post(body, sig, ip, content_type=content_type)
    assert response.status_code == 400 and response.content == b""  # no reason given
    assert verdicts() == [verdict]
    assert sent.calls == []  # nothing handed to billing
    dropped = [r for r in caplog.records if getattr(r, "event", "") == "webhook_dropped"]
    assert [r.verdict for r in dropped] == [verdict]
    assert all(b"cs_test" not in r.getMessage().encode() for r in caplog.records)  # no payload in logs


@pytest.mark.claim("webhook-replay")
def test_a_forged_delivery_with_a_real_event_id_does_not_block_the_genuine_one(sent, ip,
                                                                               django_capture_on_commit_callbacks):
    body = event("evt_1Contested")
    with django_capture_on_commit_callbacks(execute=True):
        assert post(body, signature(body, "whsec_" + "f" * 32), ip).status_code == 400
        assert post(body, signature(body), ip).status_code == 200
    assert verdicts() == ["bad_signature", "accepted"] and len(sent.ledger_ids()) == 1


def test_an_unconfigured_endpoint_refuses_everything(settings, sent, ip):
    settings.STRIPE_WEBHOOK_SECRETS = []
    body = event()
    assert post(body, signature(body), ip).status_code == 400
    assert verdicts() == ["bad_signature"] and sent.calls == []


def test_only_post_is_allowed_and_there_is_no_cors(ip):
    client = Client()
    assert client.get("/webhooks/stripe", REMOTE_ADDR=ip).status_code == 405
    response = client.options("/webhooks/stripe", REMOTE_ADDR=ip, HTTP_ORIGIN="https://evil.example",
                              HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
    assert response.status_code == 405 and "Access-Control-Allow-Origin" not in response


def test_the_route_is_csrf_exempt_but_other_posts_are_not(sent, ip, django_capture_on_commit_callbacks):
    client = Client(enforce_csrf_checks=True)
    body = event()
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post("/webhooks/stripe", body, content_type="application/json", REMOTE_ADDR=ip,
                           HTTP_STRIPE_SIGNATURE=signature(body)).status_code == 200
    assert client.post("/accounts/login/", {"email": "a@b.test", "password": "x"}).status_code == 403


@pytest.mark.claim("webhook-authenticity")
def test_a_flood_of_bad_signatures_is_throttled_without_touching_genuine_deliveries(
        settings, sent, django_capture_on_commit_callbacks):
    settings.AIEMAILY_WEBHOOK_FAILURE_LIMIT = 20
    attacker, stripe_ip = f"2001:db8:bad::{uuid.uuid4().hex[:4]}", f"2001:db8:5::{uuid.uuid4().hex[:4]}"
    statuses, genuine = [], []
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(60):
            forged = event()
            statuses.append(post(forged, signature(forged, "whsec_" + "a" * 32), attacker).status_code)
            if n % 3 == 0:
                body = event()
                genuine.append(post(body, signature(body), stripe_ip).status_code)
    assert statuses[:20] == [400] * 20 and set(statuses[20:]) == {429}
    assert genuine == [200] * 20 and len(sent.ledger_ids()) == 20
    # Throttled requests write nothing: the ledger holds the 20 counted failures and the 20 genuine.
    assert sorted(set(verdicts())) == ["accepted", "bad_signature"] and len(verdicts()) == 40


@pytest.mark.django_db(transaction=True)
@pytest.mark.claim("webhook-replay")
def test_a_concurrent_burst_with_duplicates_hands_each_event_over_exactly_once(live_server, sent):
    events = [event() for _ in range(700)]
    deliveries = events + events[:300]  # 1,000 deliveries, 30% of them duplicates
    random.Random(4).shuffle(deliveries)
    url = live_server.url + "/webhooks/stripe"

    def deliver(body):
        return requests.post(url, data=body, headers={"Content-Type": "application/json",
                                                      "Stripe-Signature": signature(body)}, timeout=30).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(deliver, deliveries))
    assert statuses == [200] * 1000
    ids = sent.ledger_ids()
    assert len(ids) == 700 == len(set(ids))
    rows = WebhookDelivery.objects.unscoped(reason="test")
    assert rows.filter(verdict="accepted").count() == 700 and rows.filter(verdict="replay").count() == 300
    assert set(map(str, rows.filter(verdict="accepted").values_list("pk", flat=True))) == set(ids)
