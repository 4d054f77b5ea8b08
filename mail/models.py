"""Mail connections (one per connected mailbox) and the OAuth attempts that create them.

Credentials are never here: each connection points at vault `Secret`s (ciphertext only).
"""

import uuid

from django.db import models
from django.utils import timezone

from aiemaily.ownership.models import OwnedModel


class Connection(OwnedModel):
    class Provider(models.TextChoices):
        GMAIL = "gmail", "Gmail"
        MICROSOFT = "microsoft", "Microsoft 365 / Outlook"
        IMAP = "imap", "IMAP / SMTP"

    class Status(models.TextChoices):
        PENDING = "pending", "connecting"
        ACTIVE = "active", "active"
        NEEDS_REAUTH = "needs_reauth", "needs you to sign in again"
        ERROR = "error", "error"
        DISCONNECTED = "disconnected", "disconnected"

    class Security(models.TextChoices):
        TLS = "tls", "TLS (implicit)"
        STARTTLS = "starttls", "STARTTLS"
        NONE = "none", "none (local test servers only)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    provider = models.CharField(max_length=16, choices=Provider.choices)
    email = models.EmailField(max_length=254, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    last_error = models.CharField(max_length=300, blank=True, help_text="user-readable; never a secret")
    requested_scopes = models.JSONField(default=list, blank=True)
    granted_scopes = models.JSONField(default=list, blank=True)
    # IMAP/SMTP server settings (provider=imap); the passwords live in the vault.
    imap_host = models.CharField(max_length=253, blank=True)
    imap_port = models.PositiveIntegerField(null=True, blank=True)
    imap_security = models.CharField(max_length=8, choices=Security.choices, blank=True)
    imap_username = models.CharField(max_length=254, blank=True)
    smtp_host = models.CharField(max_length=253, blank=True)
    smtp_port = models.PositiveIntegerField(null=True, blank=True)
    smtp_security = models.CharField(max_length=8, choices=Security.choices, blank=True)
    smtp_username = models.CharField(max_length=254, blank=True)
    imap_secret = models.ForeignKey("secrets_vault.Secret", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    smtp_secret = models.ForeignKey("secrets_vault.Secret", null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    oauth_secret = models.ForeignKey("secrets_vault.Secret", null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+", help_text="the refresh token, held by the vault")
    sync_state = models.JSONField(default=dict, blank=True, help_text="provider cursors (UIDVALIDITY, historyId…)")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    verified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self):
        return f"{self.get_provider_display()} {self.email or self.id} ({self.status})"


class OAuthAttempt(OwnedModel):
    """One trip to the provider's consent screen: state, PKCE verifier (sealed), expiry, single use."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    state_hash = models.CharField(max_length=64, unique=True)
    sealed_verifier = models.BinaryField()
    requested_scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"OAuth attempt {self.id}"
