"""The idempotency app: one owned table of claimed keys and their recorded responses."""

from django.apps import AppConfig


class IdempotencyConfig(AppConfig):
    name = "aiemaily.idempotency"
    label = "idempotency"
    verbose_name = "Idempotency keys"
