"""/healthz is liveness only; /readyz checks database, broker, object storage and the storage KMS and
tells details only to operators; /metrics (Prometheus text) is for operators only."""

import socket

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from aiemaily.celery import app as celery_app
from aiemaily.ops.metrics import SNAPSHOT_KEY
from aiemaily.ops.tasks import metrics_snapshot
from aiemaily.ownership.binding import owner_scope
from mail.models import Connection, Folder
from tests.harness.factories import UserFactory

pytestmark = pytest.mark.django_db

PUBLIC = {"HTTP_X_FORWARDED_FOR": "203.0.113.9"}  # what every request through nginx carries


@pytest.fixture(autouse=True)
def _fresh_readiness():
    from aiemaily.ops.readiness import forget

    forget()
    yield
    forget()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_liveness_does_not_depend_on_the_broker(monkeypatch):
    monkeypatch.setattr(celery_app.conf, "broker_write_url", f"redis://127.0.0.1:{_closed_port()}/0")
    response = Client().get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_when_every_dependency_answers():
    response = Client().get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok", "storage": "ok",
                                                             "storage_kms": "ok"}}
    public = Client().get("/readyz", **PUBLIC)
    assert public.status_code == 200 and public.json() == {"status": "ready"}


def test_not_ready_when_the_broker_is_down_and_the_public_learns_nothing_more(monkeypatch):
    port = _closed_port()
    monkeypatch.setattr(celery_app.conf, "broker_write_url", f"redis://127.0.0.1:{port}/0")
    operator = Client().get("/readyz")
    assert operator.status_code == 503
    assert operator.json()["checks"] == {"database": "ok", "broker": "unavailable", "storage": "ok",
                                         "storage_kms": "ok"}
    public = Client().get("/readyz", **PUBLIC)
    assert public.status_code == 503 and public.json() == {"status": "not ready"}
    assert str(port) not in operator.content.decode() + public.content.decode()


def test_not_ready_when_the_storage_kms_refuses(monkeypatch):
    from mail import blobstore

    class Refusing:
        def wrap(self, *args, **kwargs):
            raise RuntimeError("KMS says no")

    monkeypatch.setattr(blobstore, "storage_kms", lambda: Refusing())
    response = Client().get("/readyz")
    assert response.status_code == 503 and response.json()["checks"]["storage_kms"] == "unavailable"
    assert "KMS says no" not in response.content.decode()


@pytest.mark.django_db(transaction=True, databases=["default", "maintenance"])
def test_metrics_for_operators_only_with_queue_depth_and_sync_lag(settings):
    user = UserFactory()
    with owner_scope(user):
        synced = Connection.objects.create(owner=user, provider="imap", status="active", email="a@example.test")
        Folder.objects.create(owner=user, connection=synced, name="INBOX",
                              synced_at=timezone.now() - timezone.timedelta(seconds=120))
        Connection.objects.create(owner=user, provider="imap", status="active", email="b@example.test")
    cache.delete(SNAPSHOT_KEY)
    assert "aiemaily_metrics_snapshot_age_seconds -1" in Client().get("/metrics").content.decode()
    metrics_snapshot()
    response = Client().get("/metrics")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.content.decode()
    assert 'aiemaily_queue_depth{queue="sync"}' in text
    lag = [line for line in text.splitlines() if line.startswith(f'aiemaily_sync_lag_seconds{{mailbox="{synced.pk}"}}')]
    assert len(lag) == 1 and 119 <= float(lag[0].split()[-1]) < 200
    assert "aiemaily_mailboxes_never_synced 1" in text
    # Nobody else: through the proxy, or a signed-in user who is not staff.
    assert Client().get("/metrics", **PUBLIC).status_code == 404
    member = Client()
    member.force_login(UserFactory())
    assert member.get("/metrics", **PUBLIC).status_code == 404
    staff = Client()
    staff.force_login(UserFactory(is_staff=True))
    assert staff.get("/metrics", **PUBLIC).status_code == 200


def test_queue_depth_counts_waiting_messages():
    from aiemaily.ops.metrics import queue_depths

    before = queue_depths()["idle"] or 0
    with celery_app.connection_for_write() as conn:
        producer = conn.Producer()
        for _ in range(3):
            producer.publish({"probe": True}, routing_key="idle", declare=[celery_app.amqp.queues["idle"]]
                             if "idle" in celery_app.amqp.queues else None)
    try:
        assert queue_depths()["idle"] == before + 3
    finally:
        with celery_app.connection_for_write() as conn:
            conn.default_channel.queue_purge("idle")


def test_a_flood_of_public_probes_costs_one_kms_round_trip(monkeypatch):
    from mail import blobstore

    real = blobstore.storage_kms()
    calls = []

    class Counting:
        def wrap(self, *args, **kwargs):
            calls.append("wrap")
            return real.wrap(*args, **kwargs)

        def unwrap(self, *args, **kwargs):
            return real.unwrap(*args, **kwargs)

    monkeypatch.setattr(blobstore, "storage_kms", lambda: Counting())
    for _ in range(20):
        assert Client().get("/readyz", **PUBLIC).status_code == 200
    assert calls == ["wrap"]
