"""Vault records: secrets (ciphertext only), BYOK key metadata, the audit trail, and the DEK store.

`Secret`, `AiKey` and `AuditEvent` live in the main database under owner scoping. `DataKey` lives in
the separate `vault` database (secrets_vault/routers.py), so the wrapped DEK never sits beside the
ciphertext it protects, and only worker-vault can reach it.
"""

import uuid

from django.db import models
from django.utils import timezone

from aiemaily.ownership.models import OwnedModel


class Purpose(models.TextChoices):
    IMAP_PASSWORD = "imap_password", "IMAP password"
    SMTP_PASSWORD = "smtp_password", "SMTP password"
    OAUTH_REFRESH_TOKEN = "oauth_refresh_token", "OAuth refresh token"
    OAUTH_GRANT = "oauth_grant", "OAuth authorization code"
    AI_KEY = "ai_key", "AI provider key"


class Secret(OwnedModel):
    """One secret held for a user. There is no plaintext column, anywhere.

    Lifecycle: web creates the row with `sealed` (the value sealed to the vault's public key, which
    web itself cannot open); worker-vault unseals it, encrypts it under the owner's DEK into
    `ciphertext`, and clears `sealed`.
    """

    class State(models.TextChoices):
        PENDING = "pending", "waiting for the vault"
        STORED = "stored", "stored"
        FAILED = "failed", "could not be stored"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    purpose = models.CharField(max_length=32, choices=Purpose.choices)
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    sealed = models.BinaryField(null=True, editable=False)
    ciphertext = models.BinaryField(null=True, editable=False)
    dek_version = models.PositiveIntegerField(null=True, editable=False)
    hint = models.CharField(max_length=16, blank=True, help_text="non-secret, e.g. the last 4 characters")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(state="pending", sealed__isnull=False)
                    | models.Q(state="stored", ciphertext__isnull=False, sealed__isnull=True,
                               dek_version__isnull=False)
                    | models.Q(state="failed", sealed__isnull=True)
                ),
                name="secret_state_matches_payload",
            )
        ]

    def __str__(self):
        return f"<Secret {self.id} {self.purpose} {self.state}>"

    __repr__ = __str__


class AiKey(OwnedModel):
    """A user's own AI provider key (BYOK): metadata here, the key itself in a Secret."""

    class Provider(models.TextChoices):
        OPENAI = "openai", "OpenAI-compatible"
        ANTHROPIC = "anthropic", "Anthropic"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    provider = models.CharField(max_length=16, choices=Provider.choices)
    base_url = models.URLField(max_length=300, blank=True)
    # RESTRICT, not PROTECT: a key's Secret still cannot be deleted on its own (ai_key_delete removes
    # the key first), but deleting the owner may take both at once; PROTECT made account_purge fail
    # for every account holding a BYOK key.
    secret = models.OneToOneField(Secret, on_delete=models.RESTRICT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]


class AuditEvent(OwnedModel):
    """One decryption, lease, rotation, shred or storage of a secret, or one opening of a message
    for display (once per view, not per part or byte), as the user sees it."""

    class Action(models.TextChoices):
        STORE = "store", "secret stored"
        DECRYPT = "decrypt", "secret decrypted"
        LEASE = "lease", "credential leased to a worker"
        ROTATE = "rotate", "key rotated"
        SHRED = "shred", "keys destroyed"
        DELETE = "delete", "secret deleted"
        REFUSED = "refused", "decryption refused"
        AI = "ai", "mail text sent to an AI provider"
        READ = "read", "message opened for display"

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


class WrappedKeyRecord(models.Model):
    """The columns of a key stored wrapped by a KMS key: which version of the user's key it is,
    the wrapped bytes, and which KEK (id, version) wrapped them. Used by the DEK store here and by
    the per-user storage keys of message bodies (StorageKey, below)."""

    version = models.PositiveIntegerField()
    wrapped = models.BinaryField()
    kek_id = models.CharField(max_length=200)
    kek_version = models.PositiveIntegerField()
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True


class DataKey(WrappedKeyRecord):
    """A user's data encryption key, wrapped by the KEK. Lives in the `vault` database only.

    No foreign key to the user (another database); `owner_id` is also the KMS wrapping context, so
    a wrapped DEK copied to another owner's row cannot be unwrapped.
    """

    owner_id = models.UUIDField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner_id", "version"], name="datakey_owner_version"),
            models.UniqueConstraint(
                fields=["owner_id"], condition=models.Q(active=True), name="datakey_one_active_per_owner"
            ),
        ]

    def __str__(self):
        return f"<DataKey owner={self.owner_id} v{self.version} kek=v{self.kek_version}>"

    __repr__ = __str__


class StorageKey(WrappedKeyRecord):
    """A user's storage key for message bodies and encrypted metadata, wrapped by the *storage* KMS
    key. Lives in the `keys` database only (secrets_vault/routers.py), never in the main one.

    Each stored object has its own random key, wrapped by this per-user key; so a mailbox view
    costs one KMS unwrap per user (then a bounded cache), not one per message. Account deletion
    destroys these rows: a backup of the main database plus a copy of the object store then holds
    nothing that opens. `owner_id` is also the KMS wrapping context, so a row copied to another
    owner does not unwrap. No RLS here (another database, no delegation table to consult): the
    code that reads it checks what the caller may open (mail/blobstore.py).
    """

    owner_id = models.UUIDField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner_id", "version"], name="storagekey_store_owner_version"),
            models.UniqueConstraint(fields=["owner_id"], condition=models.Q(active=True),
                                    name="storagekey_store_one_active"),
        ]

    def __str__(self):
        return f"<StorageKey owner={self.owner_id} v{self.version} kek=v{self.kek_version}>"

    __repr__ = __str__
