"""AI results and per-user AI settings: owned rows under forced RLS (registered in the mail app).

Result text, and a draft's instruction, are ciphertext under per-object keys wrapped by the owner's
storage key (mail/blobstore.py `seal_field`), exactly like message bodies: shredding the account's
storage keys makes them unreadable everywhere. Results hang off their message (CASCADE).
"""

import uuid

from django.db import models
from django.utils import timezone

from aiemaily.ownership.models import OwnedModel


def field_name(result_id, field: str) -> str:
    """The name bound into an encrypted column's associated data: ai/<row id>/<field>."""
    return f"ai/{result_id}/{field}"


class AiSettings(OwnedModel):
    """How one user's assistant runs. No row means the defaults: offline, everything redacted."""

    class Mode(models.TextChoices):
        OFFLINE = "offline", "offline (no key, nothing leaves Aiemaily)"
        PLATFORM = "platform", "Aiemaily's AI provider"
        BYOK = "byok", "my own key or self-hosted model"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.OFFLINE)
    ai_key = models.ForeignKey("secrets_vault.AiKey", null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="+")
    model = models.CharField(max_length=100, blank=True, help_text="the provider's model name")
    third_party_enabled = models.BooleanField(default=True, help_text="off: nothing goes to a third-party model")
    redact_cards = models.BooleanField(default=True)
    redact_ibans = models.BooleanField(default=True)
    redact_codes = models.BooleanField(default=True)
    redact_passwords = models.BooleanField(default=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner"], name="aisettings_one_per_owner")]

    def __str__(self):
        return f"AI settings ({self.mode})"


class AiResult(OwnedModel):
    """One summary, reply draft or triage verdict, with what produced it."""

    class Kind(models.TextChoices):
        SUMMARY = "summary", "summary"
        DRAFT = "draft", "reply draft"
        TRIAGE = "triage", "triage"

    class Status(models.TextChoices):
        PENDING = "pending", "working"
        READY = "ready", "ready"
        ERROR = "error", "failed"

    class Source(models.TextChoices):
        OFFLINE = "offline", "offline default"
        PLATFORM = "platform", "platform key"
        BYOK = "byok", "your own key"

    class Category(models.TextChoices):
        NEEDS_REPLY = "needs_reply", "needs reply"
        FYI = "fyi", "FYI"
        NEWSLETTER = "newsletter", "newsletter"
        NOTIFICATION = "notification", "notification"

    class Priority(models.TextChoices):
        HIGH = "high", "high"
        NORMAL = "normal", "normal"
        LOW = "low", "low"

    class Tone(models.TextChoices):
        NEUTRAL = "neutral", "neutral"
        FRIENDLY = "friendly", "friendly"
        FORMAL = "formal", "formal"
        BRIEF = "brief", "brief"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    message = models.ForeignKey("mail.Message", on_delete=models.CASCADE, related_name="ai_results")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    source = models.CharField(max_length=8, choices=Source.choices, blank=True)
    provider = models.CharField(max_length=16, blank=True, help_text="offline, openai or anthropic")
    model = models.CharField(max_length=100, blank=True)
    ai_key_id = models.UUIDField(null=True, blank=True, help_text="the BYOK key used, when one was")
    thread_key = models.CharField(max_length=64, blank=True, help_text="which thread state a summary covers")
    tone = models.CharField(max_length=8, choices=Tone.choices, blank=True)
    instruction_ct = models.BinaryField(null=True, editable=False)
    text_ct = models.BinaryField(null=True, editable=False)
    category = models.CharField(max_length=16, choices=Category.choices, blank=True, db_index=True)
    priority = models.CharField(max_length=8, choices=Priority.choices, blank=True)
    redactions = models.PositiveIntegerField(default=0)
    bytes_sent = models.PositiveIntegerField(default=0)
    bytes_received = models.PositiveIntegerField(default=0)
    error_code = models.CharField(max_length=32, blank=True)
    error_message = models.CharField(max_length=300, blank=True, help_text="user-readable; never content")
    retry_after = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["message", "kind", "-created_at"], name="airesult_message_kind")]
        constraints = [
            models.UniqueConstraint(fields=["message"], condition=models.Q(kind="triage"),
                                    name="airesult_one_triage_per_message"),
        ]

    def __str__(self):
        return f"{self.kind} ({self.status})"
