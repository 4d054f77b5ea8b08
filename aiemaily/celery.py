"""The Celery application: JSON only, one routing table, isolated queues.

Queues follow the trust zones of DESIGN.md: `vault` (the only place secrets are decrypted) and
`sync` (provider I/O with leased credentials). Tasks carry ids and sealed bytes, never plaintext.
"""

import os

from celery import Celery
from celery.app import trace as celery_trace

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aiemaily.settings")

app = Celery("aiemaily")
app.config_from_object("django.conf:settings", namespace="CELERY")  # CELERY_* in settings.py
app.autodiscover_tasks()

# Celery logs a task's return value on success; ours are ids and sealed leases, but sealed bytes
# have no business in a log line either.
celery_trace.LOG_SUCCESS = "Task %(name)s[%(id)s] succeeded in %(runtime)ss"
