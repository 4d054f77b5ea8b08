"""The Celery application: JSON only, one routing table, isolated queues.

Queues follow the trust zones of DESIGN.md: `vault` (the only place secrets are decrypted) and
`sync` (provider I/O with leased credentials). Tasks carry ids and sealed bytes, never plaintext.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiemaily.settings")

app = Celery("aiemaily")
app.config_from_object("django.conf:settings", namespace="CELERY")


def _configure(app: Celery) -> None:
    from django.conf import settings

    options = {}
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        folder = settings.CELERY_BROKER_FOLDER
        for sub in ("queue", "processed"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        options = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
        }
    app.conf.update(
        broker_transport_options=options,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue="sync",
        task_routes={
            "secrets_vault.tasks.*": {"queue": "vault"},
            "mail.tasks.*": {"queue": "sync"},
            "aiemaily.tasks.*": {"queue": "sync"},
        },
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        beat_schedule={},
    )


_configure(app)
app.autodiscover_tasks()
