"""Celery: broker, queues per trust zone, beat's schedule, and the intervals of background work."""

from django.core.exceptions import ImproperlyConfigured

from aiemaily.env import env_int, env_str
from aiemaily.settings.core import PRODUCTION, VAR_DIR

# --- Celery ----------------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
if not CELERY_BROKER_URL:
    if PRODUCTION:
        raise ImproperlyConfigured("CELERY_BROKER_URL must be set when AIEMAILY_ENV=production")
    CELERY_BROKER_URL = "filesystem://"
    _queue_folder = VAR_DIR / "celery" / "queue"
    _queue_folder.mkdir(parents=True, exist_ok=True)
    (VAR_DIR / "celery" / "control").mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_folder),
        "data_folder_out": str(_queue_folder),
        "control_folder": str(VAR_DIR / "celery" / "control"),  # else kombu writes ./control
        "store_processed": False,
    }
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]  # never pickle
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "sync"
CELERY_TASK_ROUTES = {
    "mail.tasks.idle_watch": {"queue": "idle"},  # exact names are matched before the globs below
    # Cross-owner jobs need the BYPASSRLS maintenance role, which only worker-maintenance holds: it
    # runs beat's schedules and nothing that parses user input or mail (DESIGN.md trust zones).
    "mail.tasks.sync_due": {"queue": "maintenance"},
    "mail.tasks.outbox_reconcile_due": {"queue": "maintenance"},
    "mail.tasks.push_renew_due": {"queue": "maintenance"},
    "mail.tasks.webhook_sweep": {"queue": "maintenance"},
    "aiemaily.idempotency.tasks.reap_expired": {"queue": "maintenance"},
    "aiemaily.ops.tasks.*": {"queue": "maintenance"},  # the metrics snapshot reads across owners
    "secrets_vault.tasks.*": {"queue": "vault"},
    "mail.tasks.*": {"queue": "sync"},
    "aiemaily.tasks.*": {"queue": "sync"},
    "accounts.tasks.*": {"queue": "sync"},
    "billing.tasks.*": {"queue": "sync"},  # Stripe events handed over by /webhooks/stripe (by ledger id)
}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Workers log through LOGGING below (JSON + secret redaction), not through Celery's own handlers;
# Celery's stdout redirection would also feed our stderr handler back into itself and lose lines.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_REDIRECT_STDOUTS = False
CELERY_BEAT_SCHEDULE: dict = {
    # Expired idempotency keys are already treated as new; the hourly reaper only bounds the table.
    "idempotency-reap-expired": {"task": "aiemaily.idempotency.tasks.reap_expired", "schedule": 3600.0},
    # Polling fallback for mailboxes without a live IDLE watcher, and (re)starting those watchers.
    "mail-sync-due": {"task": "mail.tasks.sync_due", "schedule": float(env_int("AIEMAILY_SYNC_INTERVAL", 300))},
    # Sends stuck in `sending`/`uncertain` past AIEMAILY_SEND_STALE_SECONDS get a Sent-folder look.
    "mail-outbox-reconcile": {"task": "mail.tasks.outbox_reconcile_due", "schedule": 60.0},
    # Sync lag per mailbox for /metrics (a cross-owner read web may not make itself).
    "ops-metrics-snapshot": {"task": "aiemaily.ops.tasks.metrics_snapshot",
                             "schedule": float(env_int("AIEMAILY_METRICS_SNAPSHOT_SECONDS", 60))},
    # Push channels (Gmail watches, Graph subscriptions): renewed daily, lapsed or missing ones reopened.
    "mail-push-renew-due": {"task": "mail.tasks.push_renew_due",
                            "schedule": float(env_int("AIEMAILY_PUSH_RENEW_INTERVAL", 3600))},
    # Push deliveries whose hand-off to worker-sync was lost (aiemaily/webhooks/handoff.py).
    "mail-webhook-sweep": {"task": "mail.tasks.webhook_sweep", "schedule": 600.0},
}
# /readyz runs its checks (a KMS round trip among them) at most this often per process.
AIEMAILY_READYZ_CACHE_SECONDS = env_int("AIEMAILY_READYZ_CACHE_SECONDS", 5)
# How often open mailbox pages ask for new mail (seconds).
AIEMAILY_UI_POLL_SECONDS = env_int("AIEMAILY_UI_POLL_SECONDS", 20)
# IMAP IDLE watchers: how often a watcher checks that its mailbox is still connected (so a
# disconnect ends it within this many seconds), and the pause before reconnecting after the server
# dropped the session, doubling per failure up to the maximum.
AIEMAILY_IDLE_CHECK_SECONDS = env_int("AIEMAILY_IDLE_CHECK_SECONDS", 5)
AIEMAILY_IDLE_BACKOFF_SECONDS = env_int("AIEMAILY_IDLE_BACKOFF_SECONDS", 5)
AIEMAILY_IDLE_BACKOFF_MAX_SECONDS = env_int("AIEMAILY_IDLE_BACKOFF_MAX_SECONDS", 300)
# A large sync of one folder is cut into up to AIEMAILY_SYNC_PARTS parts of at least
# AIEMAILY_SYNC_PART_MIN new messages, stored side by side by the sync pool's processes
# (mail/sync/parts.py; 1 part: one process does it all); a part whose process stopped beating for
# AIEMAILY_SYNC_PART_STALE_SECONDS is taken over.
AIEMAILY_SYNC_PARTS = env_int("AIEMAILY_SYNC_PARTS", 16)
AIEMAILY_SYNC_PART_MIN = env_int("AIEMAILY_SYNC_PART_MIN", 500)
AIEMAILY_SYNC_PART_STALE_SECONDS = env_int("AIEMAILY_SYNC_PART_STALE_SECONDS", 120)
# Beat is a singleton (aiemaily/ops/beat_lock.py): a second beat stands by and takes over within this.
AIEMAILY_BEAT_LOCK_SECONDS = env_int("AIEMAILY_BEAT_LOCK_SECONDS", 30)
