"""How webhook routes hand accepted deliveries to the workers: gathered in memory, published in batches.

A delivery's durable record is its ledger row, committed before the route answers; the broker message
only tells a worker which rows to look at. Publishing one Celery message per delivery on the request
thread costs about a millisecond of the web worker's CPU (Celery builds the message, kombu frames it,
the broker answers): half of what a whole verified delivery may cost (benchmarks/bench_webhooks.py).
So a route calls `handoff(task, group, ledger_id)` once its row has committed and answers at once; a
relay thread in the same process wakes at most every AIEMAILY_WEBHOOK_HANDOFF_MS milliseconds and sends
one message per (task, group) carrying every ledger id gathered since: `task(ledger_ids, *group)`.
Under a burst that is one publish for many deliveries; a lone delivery waits at most that long.

Nothing is lost when the relay cannot publish (broker down) or the process dies first: the rows stay
open (`processed_at` is null) and are handed over again by beat's sweeps (billing's
`stripe_event_sweep`, mail's `webhook_sweep`); the workers claim each row once (`delivery_claim`), so
a row handed over twice is processed once.

AIEMAILY_WEBHOOK_HANDOFF_MS=0 publishes on the request thread, one message per delivery (no thread).
"""

import atexit
import logging
import os
import threading
import time
from collections import defaultdict

from django.conf import settings

from aiemaily.celery import app as celery_app

logger = logging.getLogger("aiemaily.webhooks")

# Past this many waiting ids the route publishes what is waiting itself: memory stays bounded and a
# relay that cannot keep up slows the routes down instead of falling behind without limit.
MAX_PENDING = 10_000


class Relay:
    def __init__(self):
        self._lock = threading.Condition()
        self._pending: dict[tuple, list[str]] = defaultdict(list)
        self._count = 0
        self._first_at = 0.0  # when the oldest waiting hand-off arrived: the batch is due LINGER after it
        self._busy = False  # a batch has left _pending but is not published yet
        self._thread: threading.Thread | None = None
        self._pid = 0

    def add(self, task: str, group: tuple, ledger_id) -> None:
        if _linger() <= 0:
            _publish({(task, group): [str(ledger_id)]})
            return
        with self._lock:
            if not self._count:
                self._first_at = time.monotonic()
                self._start()
                self._lock.notify_all()  # only the first of a batch wakes the relay (flush may wait too)
            self._pending[(task, group)].append(str(ledger_id))
            self._count += 1
            batch = self._take() if self._count >= MAX_PENDING else None
        if batch:
            _publish(batch)

    def flush(self, timeout: float = 10.0) -> bool:
        """Publish everything waiting now; True once nothing is waiting or being published."""
        with self._lock:
            batch = self._take()
        _publish(batch)
        with self._lock:
            return self._lock.wait_for(lambda: not self._busy and not self._count, timeout)

    def _take(self) -> dict[tuple, list[str]]:
        batch, self._pending, self._count = dict(self._pending), defaultdict(list), 0
        return batch

    def _start(self) -> None:
        # A forked child (gunicorn's workers, Celery's prefork pool) inherits no running thread.
        if self._thread is not None and self._pid == os.getpid() and self._thread.is_alive():
            return
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="webhook-handoff", daemon=True)
        self._thread.start()

    def _due_batch(self) -> dict[tuple, list[str]]:
        """Wait (holding the lock between waits) until the oldest waiting hand-off is LINGER old."""
        while True:
            if not self._count:  # nothing waiting, or a flush or a full relay took it
                self._lock.wait()
                continue
            remaining = self._first_at + _linger() - time.monotonic()
            if remaining <= 0:
                return self._take()
            self._lock.wait(remaining)

    def _run(self) -> None:
        while True:
            with self._lock:
                batch = self._due_batch()
                self._busy = True
            try:
                _publish(batch)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()


def _linger() -> float:
    return settings.AIEMAILY_WEBHOOK_HANDOFF_MS / 1000


def _publish(batch: dict[tuple, list[str]]) -> None:
    for (task, group), ledger_ids in batch.items():
        try:
            celery_app.send_task(task, args=[ledger_ids, *group])
        except Exception as exc:  # noqa: BLE001 - the rows stay open for the sweep; the relay keeps going
            logger.error("webhook hand-off of %d deliveries not published (%s); the sweep will hand them over",
                         len(ledger_ids), type(exc).__name__, extra={"event": "webhook_handoff_failed"})


_relay = Relay()


def handoff(task: str, group: tuple, ledger_id) -> None:
    """Queue `task([ledger ids], *group)` for this accepted, committed delivery (see the module doc)."""
    _relay.add(task, group, ledger_id)


def flush(timeout: float = 10.0) -> bool:
    return _relay.flush(timeout)


# A worker shutting down (gunicorn's graceful stop) publishes what it holds; a crash leaves it to the sweeps.
atexit.register(flush, 5.0)
