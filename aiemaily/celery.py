"""The Celery application: JSON only, one routing table, isolated queues.

Queues follow the trust zones of DESIGN.md: `vault` (the only place secrets are decrypted) and
`sync` (provider I/O with leased credentials). Tasks carry ids and sealed bytes, never plaintext.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiemaily.settings")

app = Celery("aiemaily")
app.config_from_object("django.conf:settings", namespace="CELERY")  # CELERY_* in settings.py
app.autodiscover_tasks()
