"""/healthz reports the database and the broker, and says 503 when either is down."""

import pytest
from django.test import Client

from aiemaily.celery import app as celery_app

pytestmark = pytest.mark.django_db


def test_healthy_when_database_and_broker_answer():
    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok"}


def test_503_when_the_broker_is_unreachable(monkeypatch):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(celery_app.conf, "broker_write_url", f"redis://127.0.0.1:{port}/0")
    response = Client().get("/healthz")
    assert response.status_code == 503
    assert response.json()["broker"] == "unavailable"
    assert response.json()["database"] == "ok"
    assert str(port) not in response.content.decode()
