"""The Celery application: JSON only, one routing table (settings.CELERY_TASK_ROUTES), isolated queues.

Queues follow the trust zones of DESIGN.md: `vault` (the only place secrets are decrypted), `sync`
(provider I/O with leased credentials) and `idle` (IMAP IDLE watchers). Tasks carry ids and sealed
leases, never plaintext — and even the sealed bytes are kept out of logs and monitoring (argsrepr).
"""

import os

from celery import Celery, Signature, Task, signals
from celery.app import trace as celery_trace

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiemaily.settings")


def _mask(value):
    """Leases (dicts with a `sealed` field) and raw bytes become a short label in reprs."""
    if isinstance(value, dict):
        if "sealed" in value:
            return f"<lease {value.get('purpose', '?')}>"
        return {key: _mask(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_mask(item) for item in value)
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    return value


def safe_repr(value) -> str:
    return repr(_mask(value))


class SafeReprTask(Task):
    """Sets argsrepr/kwargsrepr on every send, chained sends included (the worker calls apply_async
    for the next task of a chain with the previous result prepended), so worker logs, events and
    monitoring tools show task arguments without sealed material."""

    def apply_async(self, args=None, kwargs=None, **options):
        options.setdefault("argsrepr", safe_repr(tuple(args or ())))
        options.setdefault("kwargsrepr", safe_repr(dict(kwargs or {})))
        return super().apply_async(args, kwargs, **options)


class SafeReprCelery(Celery):
    """The same masking for a task sent by name (TaskByName below, the webhook routes), which
    reaches the broker through send_task without a task object when its module is not imported."""

    def send_task(self, name, args=None, kwargs=None, **options):
        options.setdefault("argsrepr", safe_repr(tuple(args or ())))
        options.setdefault("kwargsrepr", safe_repr(dict(kwargs or {})))
        return super().send_task(name, args, kwargs, **options)


class TaskByName:
    """A task queued by its registered name, with the calls of a task object (`s`, `si`, `delay`).

    The message is the one the task object would send, and the routing table sends it to its
    queue by name. The point is what the queueing module does not import: the task's own module,
    which belongs to another process (secrets_vault.queue, mail.queue).
    """

    def __init__(self, name: str):
        self.name = name

    def s(self, *args, **kwargs) -> Signature:
        return app.signature(self.name, args=args, kwargs=kwargs)

    def si(self, *args, **kwargs) -> Signature:
        return app.signature(self.name, args=args, kwargs=kwargs, immutable=True)

    def delay(self, *args, **kwargs):
        return self.s(*args, **kwargs).delay()


app = SafeReprCelery("aiemaily", task_cls=SafeReprTask)
app.config_from_object("django.conf:settings", namespace="CELERY")  # CELERY_* in aiemaily/settings/celery.py
app.autodiscover_tasks()
# The assistant's tasks live in their own zone (mail/assistant/tasks.py), not in an app's tasks.py:
# without this, worker-ai discards them as unregistered.
app.autodiscover_tasks(["mail.assistant"])


@signals.beat_init.connect
def _beat_singleton(sender=None, **kwargs):
    import django

    django.setup()  # idempotent; beat may not have set Django up yet, and the lease lives in its cache
    from aiemaily.ops.beat_lock import on_beat_init  # after setup: it reads settings and the cache

    on_beat_init(sender=sender, **kwargs)

# Celery logs a task's return value on success; ours are ids and sealed leases, but sealed bytes
# have no business in a log line either.
celery_trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"
