"""The metrics snapshot: one cross-owner read of sync times, on the audited maintenance path, run by
beat's schedule on a worker that holds that role; web only reads the result from the cache."""

import time

from celery import shared_task
from django.core.cache import cache
from django.db.models import Max
from django.utils import timezone

from aiemaily.ops.metrics import SNAPSHOT_KEY
from mail.models import Connection, Folder


@shared_task(name="aiemaily.ops.tasks.metrics_snapshot")
def metrics_snapshot():
    active = set(Connection.objects.unscoped(reason="ops: metrics snapshot (sync lag per mailbox)")
                 .filter(status=Connection.Status.ACTIVE).values_list("id", flat=True))
    last = dict(Folder.objects.unscoped(reason="ops: metrics snapshot (sync lag per mailbox)")
                .filter(connection_id__in=active).values("connection_id").annotate(last=Max("synced_at"))
                .values_list("connection_id", "last"))
    now = timezone.now()
    lag = {str(cid): (now - when).total_seconds() for cid, when in last.items() if when is not None}
    snapshot = {"sync_lag": lag, "never_synced": len(active) - len(lag), "taken_at": time.time()}
    cache.set(SNAPSHOT_KEY, snapshot, timeout=3600)
    return {"mailboxes": len(active)}
