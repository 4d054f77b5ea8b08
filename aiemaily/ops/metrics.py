"""Prometheus text-format metrics: queue depth per Celery queue (read live from the broker) and sync
lag per mailbox (from the snapshot that `aiemaily.ops.tasks.metrics_snapshot` writes to the cache,
since reading every owner's mailboxes needs the maintenance role, which web does not hold)."""

import logging
import time

from amqp.exceptions import NotFound as AmqpNotFound
from django.core.cache import cache
from kombu.exceptions import ChannelError

from aiemaily.celery import app as celery_app

logger = logging.getLogger(__name__)

QUEUES = ("vault", "sync", "idle", "ai", "maintenance")
SNAPSHOT_KEY = "ops:metrics-snapshot"


def queue_depths() -> dict[str, int | None]:
    depths: dict[str, int | None] = {}
    try:
        with celery_app.connection_for_read() as conn:
            channel = conn.default_channel
            for queue in QUEUES:
                try:
                    depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
                except (ChannelError, AmqpNotFound):
                    # Not declared yet: nothing was ever sent there, so nothing waits. (AMQP closes
                    # the channel on a failed passive declare; open another for the next queue.)
                    depths[queue] = 0
                    channel = conn.channel()
    except Exception:  # noqa: BLE001
        logger.exception("metrics: broker unreachable")
    return depths


def render() -> str:
    lines = ["# HELP aiemaily_queue_depth Messages waiting in each Celery queue.",
             "# TYPE aiemaily_queue_depth gauge"]
    for queue, depth in sorted(queue_depths().items()):
        if depth is not None:
            lines.append(f'aiemaily_queue_depth{{queue="{queue}"}} {depth}')
    snapshot = cache.get(SNAPSHOT_KEY) or {}
    lines += ["# HELP aiemaily_sync_lag_seconds Seconds since each active mailbox last finished a sync.",
              "# TYPE aiemaily_sync_lag_seconds gauge"]
    for connection_id, lag in sorted((snapshot.get("sync_lag") or {}).items()):
        lines.append(f'aiemaily_sync_lag_seconds{{mailbox="{connection_id}"}} {lag:.0f}')
    lines += ["# HELP aiemaily_mailboxes_never_synced Active mailboxes that have not finished a first sync.",
              "# TYPE aiemaily_mailboxes_never_synced gauge",
              f"aiemaily_mailboxes_never_synced {snapshot.get('never_synced', 0)}",
              "# HELP aiemaily_metrics_snapshot_age_seconds Age of the per-mailbox snapshot (-1: none yet).",
              "# TYPE aiemaily_metrics_snapshot_age_seconds gauge"]
    taken = snapshot.get("taken_at")
    if taken is None:
        lines.append("aiemaily_metrics_snapshot_age_seconds -1")
    else:
        lines.append(f"aiemaily_metrics_snapshot_age_seconds {max(0, time.time() - taken):.0f}")
    return "\n".join(lines) + "\n"
