"""Background work of the idempotency app: the hourly reaper (CELERY_BEAT_SCHEDULE, queue `sync`)."""

import logging

from celery import shared_task

from aiemaily.idempotency.services import keys_reap

logger = logging.getLogger(__name__)


@shared_task(name="aiemaily.idempotency.tasks.reap_expired")
def reap_expired() -> int:
    """Delete idempotency keys older than 24 h, for every owner (through the `maintenance` alias)."""
    deleted = keys_reap()
    logger.info("reaped %d expired idempotency keys", deleted, extra={"event": "idempotency_reaped"})
    return deleted
