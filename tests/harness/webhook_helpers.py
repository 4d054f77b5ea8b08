"""What the Gmail and Graph webhook tests share: the capture of hand-offs to worker-sync and the ledger."""

import threading

from aiemaily.webhooks.models import WebhookDelivery

PROCESS_TASK = "mail.tasks.webhook_process"


class Sent:
    """Celery sends by name (the route's hand-off), kept here instead of on a broker."""

    def __init__(self):
        self.lock, self.calls = threading.Lock(), []

    def __call__(self, name, args=None, **kwargs):
        with self.lock:
            self.calls.append((name, tuple(args or ())))

    def processing(self) -> list[tuple]:
        return [args for name, args in self.calls if name == PROCESS_TASK]

    def ledger_ids(self) -> list[str]:
        return [ledger_id for args in self.processing() for ledger_id in args[0]]


def verdicts(provider: str) -> list[str]:
    return list(WebhookDelivery.objects.unscoped(reason="test").filter(provider=provider).order_by("received_at")
                .values_list("verdict", flat=True))


def dropped_log(caplog) -> list[str]:
    return [r.verdict for r in caplog.records if getattr(r, "event", "") == "webhook_dropped"]
