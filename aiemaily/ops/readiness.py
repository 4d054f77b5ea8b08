"""Readiness checks of the web process's dependencies: each answers True or False and logs why.

Only what web itself needs is checked: the database, the broker, the object store and the storage
KMS (web decrypts bodies for display). The vault's KMS is not web's to reach.
"""

import logging
import os
import secrets
import threading
import time

from django.conf import settings
from django.db import connection

from aiemaily.celery import app as celery_app
from mail import blobstore

logger = logging.getLogger(__name__)


def database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception:  # noqa: BLE001 - a readiness check reports failures, it does not raise them
        logger.exception("readiness: database unreachable")
        return False


def broker_ok() -> bool:
    try:
        with celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:  # noqa: BLE001
        logger.exception("readiness: broker unreachable")
        return False


def storage_ok() -> bool:
    """The object store answers a metadata lookup (S3: a HEAD request; local: the folder is there)."""
    try:
        blobstore._storage().exists("readyz-probe")
        return True
    except Exception:  # noqa: BLE001
        logger.exception("readiness: object storage unreachable")
        return False


def storage_kms_ok() -> bool:
    """A wrap and unwrap of a throwaway key round-trips through the storage KMS."""
    if settings.AIEMAILY_STORAGE_KMS_CONFIG is None:
        return True  # this process does not use one

    probe = secrets.token_bytes(32)
    context = {"purpose": "readiness-probe", "nonce": os.urandom(8).hex()}
    try:
        kms = blobstore.storage_kms()
        return kms.unwrap(kms.wrap(probe, context=context), context=context) == probe
    except Exception:  # noqa: BLE001
        logger.exception("readiness: storage KMS unreachable")
        return False


CHECKS = {"database": database_ok, "broker": broker_ok, "storage": storage_ok, "storage_kms": storage_kms_ok}


_last: tuple[float, dict[str, bool]] | None = None
_lock = threading.Lock()


def readiness() -> dict[str, bool]:
    """The checks, run at most once per AIEMAILY_READYZ_CACHE_SECONDS per process: /readyz is public,
    and each run costs a KMS round trip and an object-store request, so a flood of anonymous probes
    must not turn into a flood of KMS calls (billed, and rate-limited by the provider)."""
    global _last
    with _lock:
        now = time.monotonic()
        if _last is not None and now - _last[0] < settings.AIEMAILY_READYZ_CACHE_SECONDS:
            return dict(_last[1])
        result = {name: check() for name, check in CHECKS.items()}
        _last = (now, result)
        return dict(result)


def forget() -> None:
    """Drop the remembered result (tests, and an operator who wants a fresh answer now)."""
    global _last
    with _lock:
        _last = None
