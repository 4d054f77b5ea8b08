"""Shared by the storage-key commands: refuse to run in a process without the storage KMS key and
the key store (worker-vault, beat), with a message that says where to run them."""

from django.conf import settings
from django.core.management.base import CommandError


def require_storage_zone() -> None:
    if settings.AIEMAILY_STORAGE_KMS_CONFIG is None or "keys" not in settings.DATABASES:
        raise CommandError("this process has no storage KMS key or key store: run with a mail zone's "
                           "configuration (AIEMAILY_PROCESS=sync, its KEYS_DATABASE_URL and storage KMS settings)")
