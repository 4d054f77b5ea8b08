"""How webhook routes hand accepted deliveries over (aiemaily/webhooks/handoff.py) and what their failure
budget costs (aiemaily/webhooks/http.py).

- A relay thread publishes, after the ledger rows committed, one message per task and group with every
  ledger id gathered since: each id exactly once, without anybody asking it to (no flush).
- When it cannot publish (the broker refuses) the answer is still 200 and nothing is lost: the rows stay
  open and beat's sweeps hand them over (billing's for Stripe, mail's for Gmail and Graph).
- AIEMAILY_WEBHOOK_HANDOFF_MS=0 publishes on the request thread; a full relay makes the route publish.
- A genuine delivery never touches the shared failure count; an address past its budget is answered 429
  from the process's memory.
"""

import json
import logging
import time
import uuid
from datetime import timedelta

import pytest
import stripe
from django.test import Client
from django.utils import timezone

from aiemaily.celery import app as celery_app
from aiemaily.security import window_count
from aiemaily.webhooks import handoff
from aiemaily.webhooks.models import WebhookDelivery
from aiemaily.webhooks.services import delivery_accept, subscription_store
from billing.tasks import stripe_event_sweep
from mail.tasks import webhook_process, webhook_sweep
from tests.harness.factories import UserFactory
from tests.harness.webhook_helpers import Sent

pytestmark = pytest.mark.django_db

SECRET = "whsec_" + "handoff0secret" * 3
TASK = "billing.tasks.stripe_events_process"


@pytest.fixture
def sent(monkeypatch, settings):
    settings.STRIPE_WEBHOOK_SECRETS = [SECRET]
    capture = Sent(TASK)
    monkeypatch.setattr(celery_app, "send_task", capture)
    return capture


def published(capture: Sent) -> list[tuple]:
    """What has reached the broker so far, without making the relay publish (Sent.calls would)."""
    with capture.lock:
        return list(capture._calls)


def wait_published(capture: Sent, count: int, timeout: float = 15) -> list[tuple]:
    deadline = time.monotonic() + timeout
    while len(published(capture)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return published(capture)


def deliver(ip: str = "192.0.2.40", secret: str = SECRET) -> tuple[int, str]:
    event_id = f"evt_{uuid.uuid4().hex}"
    body = json.dumps({"id": event_id, "object": "event", "type": "invoice.paid", "created": int(time.time()),
                       "data": {"object": {"id": "in_1"}}})
    response = Client().post("/webhooks/stripe", body, content_type="application/json", REMOTE_ADDR=ip,
                             HTTP_STRIPE_SIGNATURE=stripe.WebhookSignature.generate_signature_header(body, secret))
    return response.status_code, event_id


def accepted_ids(event_ids: list[str]) -> list[str]:
    rows = WebhookDelivery.objects.unscoped(reason="test").filter(delivery_id__in=event_ids, verdict="accepted")
    by_event = {row.delivery_id: str(row.pk) for row in rows}
    return [by_event[event_id] for event_id in event_ids]


def test_a_burst_is_published_by_the_relay_in_one_message_with_each_ledger_id_once(
        settings, sent, django_capture_on_commit_callbacks):
    settings.AIEMAILY_WEBHOOK_HANDOFF_MS = 1500  # long enough that the whole burst lands in one batch
    with django_capture_on_commit_callbacks(execute=True):
        events = [deliver() for _ in range(5)]
    assert [status for status, _ in events] == [200] * 5
    assert published(sent) == []  # answered before anything was published
    [(name, args)] = wait_published(sent, 1)  # the relay thread, on its own
    assert name == TASK and args == (accepted_ids([event_id for _, event_id in events]),)
    time.sleep(0.3)
    assert len(published(sent)) == 1  # and nothing twice


def test_a_lone_delivery_is_published_within_the_interval(settings, sent, django_capture_on_commit_callbacks):
    settings.AIEMAILY_WEBHOOK_HANDOFF_MS = 10
    with django_capture_on_commit_callbacks(execute=True):
        status, event_id = deliver()
    assert status == 200
    assert wait_published(sent, 1, timeout=5) == [(TASK, (accepted_ids([event_id]),))]


def test_zero_publishes_each_delivery_on_the_request_thread(settings, sent, django_capture_on_commit_callbacks):
    settings.AIEMAILY_WEBHOOK_HANDOFF_MS = 0
    with django_capture_on_commit_callbacks(execute=True):
        first = deliver()[1]
    assert published(sent) == [(TASK, (accepted_ids([first]),))]
    with django_capture_on_commit_callbacks(execute=True):
        second = deliver()[1]
    assert published(sent) == [(TASK, (accepted_ids([first]),)), (TASK, (accepted_ids([second]),))]


def test_a_full_relay_makes_the_route_publish_what_is_waiting(settings, sent, monkeypatch,
                                                              django_capture_on_commit_callbacks):
    settings.AIEMAILY_WEBHOOK_HANDOFF_MS = 60_000  # the relay would wait a minute
    monkeypatch.setattr(handoff, "MAX_PENDING", 3)
    with django_capture_on_commit_callbacks(execute=True):
        events = [deliver()[1] for _ in range(3)]
    assert published(sent) == [(TASK, (accepted_ids(events),))]  # published by the third request itself


def test_a_broker_refusing_the_hand_off_loses_nothing(settings, monkeypatch, caplog,
                                                      django_capture_on_commit_callbacks):
    settings.STRIPE_WEBHOOK_SECRETS = [SECRET]
    settings.AIEMAILY_WEBHOOK_HANDOFF_MS = 10

    def refuse(name, args=None, **kwargs):
        raise ConnectionRefusedError("broker down")

    monkeypatch.setattr(celery_app, "send_task", refuse)
    with caplog.at_level(logging.ERROR, logger="aiemaily.webhooks"):
        with django_capture_on_commit_callbacks(execute=True):
            events = [deliver() for _ in range(3)]
        assert handoff.flush()
    assert [status for status, _ in events] == [200] * 3  # Stripe is not asked to retry: the rows are ours
    failures = [r for r in caplog.records if getattr(r, "event", "") == "webhook_handoff_failed"]
    assert failures and all("evt_" not in r.getMessage() for r in failures)
    ledger_ids = accepted_ids([event_id for _, event_id in events])
    rows = WebhookDelivery.objects.unscoped(reason="test").filter(pk__in=ledger_ids)
    assert rows.filter(processed_at__isnull=True).count() == 3  # open, waiting for the sweep
    rows.update(received_at=timezone.now() - timedelta(minutes=11))
    swept = Sent("billing.tasks.stripe_event_process")
    monkeypatch.setattr(celery_app, "send_task", swept)
    assert stripe_event_sweep.apply().get() == {"requeued": 3}
    assert sorted(args[0] for _, args in swept.calls) == sorted(ledger_ids)


def test_mail_deliveries_whose_hand_off_was_lost_are_swept_to_every_channel_of_the_account(monkeypatch):
    queued = []
    monkeypatch.setattr(webhook_process, "delay", lambda *args: queued.append(args))
    user, orphan = UserFactory(), UserFactory()
    first, second = uuid.uuid4(), uuid.uuid4()
    subscription_store(provider="gmail", external_id=f"g-{first}", account_id=user.pk, connection_id=first)
    subscription_store(provider="gmail", external_id=f"g-{second}", account_id=user.pk, connection_id=second)
    lost = [delivery_accept(provider="gmail", delivery_id=f"m{n}", kind="push", account_id=user.pk).delivery
            for n in range(2)]
    fresh = delivery_accept(provider="gmail", delivery_id="m-fresh", kind="push", account_id=user.pk).delivery
    gone = delivery_accept(provider="graph", delivery_id="g-gone", kind="created", account_id=orphan.pk).delivery
    old = timezone.now() - timedelta(minutes=11)
    WebhookDelivery.objects.unscoped(reason="test").filter(pk__in=[r.pk for r in [*lost, gone]]).update(received_at=old)
    assert webhook_sweep.apply().get() == {"requeued": 3, "accounts": 2}
    ids = [str(r.pk) for r in lost]
    assert sorted(queued, key=lambda a: bool(a[0]), reverse=True) == [
        (ids, str(user.pk), str(first), "sync"), ([], str(user.pk), str(second), "sync")]
    rows = WebhookDelivery.objects.unscoped(reason="test")
    assert rows.get(pk=gone.pk).processed_at is not None  # no channel left: nothing to sync, closed
    assert rows.get(pk=fresh.pk).processed_at is None  # too recent: its hand-off may still be on the way
    # The sibling's empty hand-off still syncs its mailbox (here: gone), where claimed ids would say "done".
    assert webhook_process.apply(args=[[], str(user.pk), str(second), "sync"]).get()["status"] == "gone"


def test_a_genuine_delivery_never_touches_the_shared_failure_count(sent, monkeypatch,
                                                                    django_capture_on_commit_callbacks):
    class Unreachable:
        def __getattr__(self, name):
            raise AssertionError(f"the failure count was consulted ({name})")

    monkeypatch.setattr(window_count, "cache", Unreachable())
    with django_capture_on_commit_callbacks(execute=True):
        status, event_id = deliver(ip=f"2001:db8:9::{uuid.uuid4().hex[:4]}")
    assert status == 200 and len(accepted_ids([event_id])) == 1


def test_an_address_past_its_budget_is_answered_from_memory(settings, sent, monkeypatch):
    settings.AIEMAILY_WEBHOOK_FAILURE_LIMIT = 2
    attacker = f"2001:db8:bad::{uuid.uuid4().hex[:4]}"
    forged = "whsec_" + "f" * 32
    assert [deliver(attacker, forged)[0] for _ in range(3)] == [400, 400, 429]
    verdicts = WebhookDelivery.objects.unscoped(reason="test").filter(verdict="bad_signature")
    assert verdicts.count() == 2  # the one past the budget wrote nothing

    class Unreachable:
        def __getattr__(self, name):
            raise AssertionError(f"the failure count was consulted ({name})")

    monkeypatch.setattr(window_count, "cache", Unreachable())
    assert deliver(attacker, forged)[0] == 429
    assert deliver(attacker)[0] == 429  # for the window, even a genuine signature from there
    assert verdicts.count() == 2 and published(sent) == []


def test_each_batch_is_due_its_interval_after_its_first_delivery_whatever_came_before(
        settings, sent, django_capture_on_commit_callbacks):
    settings.AIEMAILY_WEBHOOK_HANDOFF_MS = 60_000  # the relay now waits a minute for this batch...
    with django_capture_on_commit_callbacks(execute=True):
        first = deliver()[1]
    time.sleep(0.1)
    assert published(sent) == [] and handoff.flush()  # ...which a flush (a worker stopping) publishes
    settings.AIEMAILY_WEBHOOK_HANDOFF_MS = 10
    with django_capture_on_commit_callbacks(execute=True):
        second = deliver()[1]
    assert wait_published(sent, 2, timeout=5) == [(TASK, (accepted_ids([first]),)), (TASK, (accepted_ids([second]),))]
