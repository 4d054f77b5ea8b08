"""Vault records in the main database: the audit trail of every use of a user's secrets.

(The DEK store lives in the separate `vault` database alias; see secrets_vault/keystore.py.)
"""

import uuid

from django.db import models
from django.utils import timezone

from aiemaily.ownership.models import OwnedModel


class AuditEvent(OwnedModel):
    """One decryption, lease, rotation, shred or storage of a secret, as the user sees it."""

    class Action(models.TextChoices):
        STORE = "store", "secret stored"
        DECRYPT = "decrypt", "secret decrypted"
        LEASE = "lease", "credential leased to a worker"
        ROTATE = "rotate", "key rotated"
        SHRED = "shred", "keys destroyed"
        DELETE = "delete", "secret deleted"
        REFUSED = "refused", "decryption refused"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    action = models.CharField(max_length=16, choices=Action.choices)
    purpose = models.CharField(max_length=64, blank=True)
    process = models.CharField(max_length=32, help_text="which process acted: web, vault, sync, admin")
    subject = models.CharField(max_length=128, blank=True, help_text="the id of the secret or connection")
    detail = models.CharField(max_length=255, blank=True, help_text="non-secret context")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at"], name="audit_owner_created")]

    def __str__(self):
        return f"{self.action} {self.purpose} by {self.process}"
