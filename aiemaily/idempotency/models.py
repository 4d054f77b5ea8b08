"""One row per (owner, Idempotency-Key): the request's fingerprint and the response it produced.

A row is written only when a request has finished (in the same transaction as the request's own
writes), so a row always holds a complete response; a request still running is visible to others
through a lock, not through a row (see services.py).
"""

import uuid

from django.db import models
from django.utils import timezone

from aiemaily.ownership.models import OwnedModel


class IdempotencyKey(OwnedModel):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    key = models.CharField(max_length=255, help_text="the client's Idempotency-Key, 1-255 visible ASCII characters")
    fingerprint = models.CharField(max_length=64, help_text="HMAC-SHA256 of method, path, query and canonical body")
    response_status = models.PositiveSmallIntegerField()
    response_headers = models.JSONField(default=list, help_text="[[name, value], ...] from a fixed safe list")
    response_body = models.BinaryField(help_text="the response body as sent, after secret redaction")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True, help_text="after this the key is new again; the reaper deletes it")

    class Meta:
        constraints = [
            # The claim itself: whatever the application gets wrong, one key runs once per owner.
            models.UniqueConstraint(fields=["owner", "key"], name="idempotency_key_unique_per_owner"),
            models.CheckConstraint(condition=models.Q(key__regex=r"^[!-~]{1,255}$"),
                                   name="idempotency_key_visible_ascii"),
            # A 5xx is never recorded: the key stays free, so the retry runs again.
            models.CheckConstraint(condition=models.Q(response_status__gte=100, response_status__lt=500),
                                   name="idempotency_key_records_no_5xx"),
        ]

    def __str__(self):
        return f"<IdempotencyKey {self.id} {self.response_status}>"

    __repr__ = __str__
