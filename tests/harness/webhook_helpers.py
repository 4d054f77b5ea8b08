"""What the Gmail and Graph webhook tests share: the capture of hand-offs to worker-sync and the ledger,
the chains a commit publishes, a disconnect, and a worker-sync task run with a vault-leased token.
Import the `handed` fixture by name."""

import threading

import pytest
from celery import canvas

from aiemaily.celery import app as celery_app
from aiemaily.ownership.binding import owner_scope
from aiemaily.webhooks import handoff
from aiemaily.webhooks.models import WebhookDelivery
from mail import services
from mail.models import Connection
from secrets_vault.tasks import oauth_access_lease

PROCESS_TASK = "mail.tasks.webhook_process"


class Sent:
    """Celery sends by name (the routes' hand-offs), kept here instead of on a broker. Reading them
    first has the relay publish what it gathered (aiemaily/webhooks/handoff.py), as it would within
    AIEMAILY_WEBHOOK_HANDOFF_MS."""

    def __init__(self, task: str = PROCESS_TASK):
        self.task = task
        self.lock, self._calls = threading.Lock(), []

    def __call__(self, name, args=None, kwargs=None, **options):
        with self.lock:
            self._calls.append((name, tuple(args or ())))

    @property
    def calls(self) -> list[tuple]:
        assert handoff.flush(), "the hand-off relay did not publish within its timeout"
        with self.lock:
            return list(self._calls)

    def processing(self) -> list[tuple]:
        return [args for name, args in self.calls if name == self.task]

    def ledger_ids(self) -> list[str]:
        return [ledger_id for args in self.processing() for ledger_id in args[0]]


@pytest.fixture
def handed(monkeypatch):
    capture = Sent()
    monkeypatch.setattr(celery_app, "send_task", capture)
    return capture


def verdicts(provider: str) -> list[str]:
    return list(WebhookDelivery.objects.unscoped(reason="test").filter(provider=provider).order_by("received_at")
                .values_list("verdict", flat=True))


def dropped_log(caplog) -> list[str]:
    return [r.verdict for r in caplog.records if getattr(r, "event", "") == "webhook_dropped"]


def record_chains(monkeypatch, *, names: bool = False) -> list:
    """Chains published from here on, kept instead of sent: each as its task signatures, or their names."""
    chains = []
    if names:
        monkeypatch.setattr(canvas._chain, "apply_async",
                            lambda self, *a, **kw: chains.append([t.name for t in self.tasks]))
    else:
        monkeypatch.setattr(canvas._chain, "apply_async", lambda self, *a, **kw: chains.append(self.tasks))
    return chains


def disconnect(user, connection_id, capture, *, execute: bool, keep_mail: bool) -> None:
    """The owner disconnects the mailbox; the commit's callbacks run only with `execute`."""
    with owner_scope(user), capture(execute=execute):
        services.connection_disconnect(owner=user, connection=Connection.objects.for_owner(user).get(pk=connection_id),
                                       keep_mail=keep_mail)


def leased_run(task, user, connection_id):
    """Runs a worker-sync task as its chain would: after the vault leased it a fresh access token."""
    owner = str(user.pk)
    return task(oauth_access_lease(owner, connection_id, "oauth_access_token"), owner_id=owner,
                connection_id=connection_id)
