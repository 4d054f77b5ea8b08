"""Task arguments as Celery shows them (argsrepr) never include sealed leases or raw bytes."""

import pytest

from aiemaily.celery import SafeReprTask, app, safe_repr
from mail.tasks import connection_verify

pytestmark = pytest.mark.claim("no-plaintext-leaks")

LEASE = {"lease_id": "l1", "owner_id": "o", "connection_id": "c", "purpose": "imap_password",
         "expires_at": "2026-01-01T00:00:00+00:00", "sealed": "c2VhbGVkLWJ5dGVzLWNhbmFyeQ=="}


def test_leases_and_bytes_are_masked():
    text = safe_repr(({"imap_password": LEASE, "smtp_password": LEASE}, b"\x00" * 32, "id-1"))
    assert "c2VhbGVk" not in text and "<lease imap_password>" in text and "<32 bytes>" in text
    assert "id-1" in text


def test_every_task_uses_the_safe_base_class():
    ours = [task for name, task in app.tasks.items() if name.split(".")[0] in ("mail", "secrets_vault", "accounts",
                                                                              "aiemaily")]
    assert ours and all(isinstance(task, SafeReprTask) for task in ours)


def test_a_chained_send_carries_masked_argsrepr(monkeypatch):
    sent = {}

    def capture(self, *args, **kwargs):
        sent.update(kwargs)

    monkeypatch.setattr("celery.app.base.Celery.send_task", capture)
    connection_verify.apply_async(({"imap_password": LEASE},), {"owner_id": "o", "connection_id": "c"})
    assert "c2VhbGVk" not in sent["argsrepr"] and "<lease imap_password>" in sent["argsrepr"]
    assert "'owner_id': 'o'" in sent["kwargsrepr"]
