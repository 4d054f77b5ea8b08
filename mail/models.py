"""Mail connections (one per connected mailbox) and the OAuth attempts that create them.

Credentials are never here: each connection points at vault `Secret`s (ciphertext only).
"""

import uuid

from django.db import models
from django.utils import timezone

from aiemaily.ownership.models import OwnedManager, OwnedModel, OwnedQuerySet
from secrets_vault.models import WrappedKeyRecord


class DelegatedQuerySet(OwnedQuerySet):
    """Adds the one other way to read owned rows: as the delegate of a live grant."""

    def delegated_to(self, delegate):
        """Rows of other owners that a live Delegation grants `delegate` (RLS checks it again)."""
        live = Delegation._base_manager.filter(
            delegate=delegate, revoked_at__isnull=True, owner_id=models.OuterRef("owner_id"),
            connection_id=models.OuterRef("connection_id"), thread_id=models.OuterRef("thread_id"))
        clone = self.filter(models.Exists(live))
        clone._owner_scoped = True
        return clone


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


class StorageKey(OwnedModel, WrappedKeyRecord):
    """A user's intermediate key for message bodies, wrapped by the *storage* KMS key.

    Each stored object has its own random key, wrapped by this per-user key; so a mailbox view
    costs one KMS unwrap per user (then a bounded cache), not one per message. The storage KMS key
    is distinct from the credentials KEK: web can read mail without ever touching credentials.
    """

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner", "version"], name="storagekey_owner_version"),
            models.UniqueConstraint(fields=["owner"], condition=models.Q(active=True),
                                    name="storagekey_one_active_per_owner"),
        ]

    def __str__(self):
        return f"storage key v{self.version}"


class Folder(OwnedModel):
    """A mailbox folder (IMAP) or label (Gmail) with its sync cursors. Cursors live here, not in Redis."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="folders")
    name = models.CharField(max_length=500)
    role = models.CharField(max_length=16, blank=True, help_text="inbox, sent, archive, trash, drafts, junk")
    uidvalidity = models.BigIntegerField(null=True, blank=True)
    uidnext = models.BigIntegerField(null=True, blank=True)
    highestmodseq = models.BigIntegerField(null=True, blank=True)
    last_uid = models.BigIntegerField(default=0, help_text="every UID up to this one is stored")
    synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection", "name"], name="folder_connection_name")]
        ordering = ["name"]

    def __str__(self):
        return self.name


class Message(OwnedModel):
    """Message metadata. The body (raw RFC 5322) is an encrypted object, never a column."""

    objects = OwnedManager.from_queryset(DelegatedQuerySet)()

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="messages")
    folder = models.ForeignKey(Folder, on_delete=models.CASCADE, related_name="messages")
    uidvalidity = models.BigIntegerField(null=True, blank=True)
    uid = models.BigIntegerField(null=True, blank=True)
    provider_id = models.CharField(max_length=200, blank=True)
    message_id = models.CharField(max_length=998, blank=True)
    thread_id = models.CharField(max_length=200, blank=True)
    from_addr = models.CharField(max_length=998, blank=True)
    to_addrs = models.JSONField(default=list, blank=True)
    cc_addrs = models.JSONField(default=list, blank=True)
    subject = models.CharField(max_length=998, blank=True)
    date = models.DateTimeField(null=True, blank=True, db_index=True)
    flags = models.JSONField(default=list, blank=True)
    labels = models.JSONField(default=list, blank=True)
    unread = models.BooleanField(default=True)
    size = models.PositiveIntegerField(default=0)
    snippet = models.CharField(max_length=300, blank=True)
    blob_key = models.CharField(max_length=400, blank=True)
    parse_error = models.CharField(max_length=200, blank=True, help_text="shown raw when not parseable")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["folder", "uidvalidity", "uid"], name="message_folder_uid",
                                    condition=models.Q(uid__isnull=False)),
            models.UniqueConstraint(fields=["connection", "provider_id"], name="message_connection_provider_id",
                                    condition=~models.Q(provider_id="")),
        ]
        indexes = [models.Index(fields=["owner", "-date"], name="message_owner_date"),
                   models.Index(fields=["connection", "folder", "-date"], name="message_folder_date")]

    def __str__(self):
        return self.subject or "(no subject)"


class OutboxMessage(OwnedModel):
    """A message the user asked us to send, moving queued → sending → sent | failed | uncertain.

    `sending` is committed before the provider sees the message. Finding a row still `sending` later
    means a worker died mid-send: it becomes `uncertain` and is resolved by looking for its
    Message-ID in the Sent folder — never by sending again.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        SENDING = "sending", "sending"
        SENT = "sent", "sent"
        FAILED = "failed", "failed"
        UNCERTAIN = "uncertain", "not sure it was sent"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="outbox")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    message_id = models.CharField(max_length=300, unique=True)
    to_addrs = models.JSONField(default=list)
    cc_addrs = models.JSONField(default=list, blank=True)
    subject = models.CharField(max_length=998, blank=True)
    in_reply_to = models.CharField(max_length=998, blank=True)
    blob_key = models.CharField(max_length=400)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sending_started_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.subject or '(no subject)'} ({self.status})"


class Delegation(OwnedModel):
    """The owner hands one thread to another Aiemaily user, to read (or read and draft).

    Both owner-scoping layers honour the grant and nothing more: the `delegated_to` manager path
    filters by it, and extra SELECT-only RLS policies (migration 0004) let the delegate's rows through
    for exactly that thread while the grant is not revoked. The delegate can never write the
    owner's rows: every WITH CHECK stays owner-only.
    """

    class Permission(models.TextChoices):
        READ = "read", "read"
        DRAFT = "draft", "read and draft replies"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    delegate = models.ForeignKey("accounts.User", on_delete=models.CASCADE, related_name="+")
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="+")
    thread_id = models.CharField(max_length=200)
    permission = models.CharField(max_length=8, choices=Permission.choices, default=Permission.READ)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["delegate", "owner", "thread_id"], name="delegation_lookup")]
        constraints = [
            models.UniqueConstraint(fields=["owner", "delegate", "connection", "thread_id"],
                                    condition=models.Q(revoked_at__isnull=True), name="delegation_one_live_grant"),
        ]

    def __str__(self):
        return f"thread {self.thread_id} → {self.delegate_id} ({self.permission})"
