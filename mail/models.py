"""Mail connections (one per connected mailbox) and the OAuth attempts that create them.

Credentials are never here: each connection points at vault `Secret`s (ciphertext only).
"""

import re
import uuid

from django.db import models
from django.utils import timezone

from aiemaily import bulk_insert
from aiemaily.ownership.models import OwnedManager, OwnedModel, OwnedQuerySet
from mail import metadata
from secrets_vault.models import WrappedKeyRecord

# A label name the app accepts from a user (web form, API): an IMAP atom, no specials or spaces.
LABEL = re.compile(r"^[A-Za-z0-9_.$-][A-Za-z0-9_.$-]{0,63}$")


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
    ai_triage = models.BooleanField(default=False, help_text="opt-in: the assistant triages new mail on sync")

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self):
        return f"{self.get_provider_display()} {self.email or self.id} ({self.status})"

    # Active, with the stored credentials a sync (or a send) needs. A password or token can be gone
    # (its storage failed, it was shredded) while the connection stays: then nothing is queued for it,
    # since the vault could not lease what it does not have.
    @property
    def can_sync(self) -> bool:
        if self.status != self.Status.ACTIVE:
            return False
        if self.provider == self.Provider.IMAP:
            return self.imap_secret_id is not None
        return self.oauth_secret_id is not None

    @property
    def can_send(self) -> bool:
        return self.can_sync and (self.provider != self.Provider.IMAP or self.smtp_secret_id is not None)


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


class LegacyStorageKey(OwnedModel, WrappedKeyRecord):
    """Where storage keys lived before they moved to the key store (secrets_vault.StorageKey).

    Read only to move a row out (mail/blobstore.py on first use, `manage.py storage_keys_move` in
    bulk), which deletes it here. Can go once every deployment has run storage_keys_move; its
    table stays in the main database's backups taken before the move (docs/operations.md).
    """

    class Meta:
        db_table = "mail_storagekey"
        constraints = [
            models.UniqueConstraint(fields=["owner", "version"], name="storagekey_owner_version"),
            models.UniqueConstraint(fields=["owner"], condition=models.Q(active=True),
                                    name="storagekey_one_active_per_owner"),
        ]

    def __str__(self):
        return f"legacy storage key v{self.version}"


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
    parts = models.JSONField(default=dict, blank=True, editable=False,
                             help_text="a large sync cut into parts that several processes store (mail/sync/parts.py)")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection", "name"], name="folder_connection_name")]
        ordering = ["name"]

    def __str__(self):
        return self.name


class MessageManager(OwnedManager.from_queryset(DelegatedQuerySet)):
    def bulk_create(self, objs, *args, **kwargs):
        """Seal every row's metadata before the insert (one storage-key fetch for the batch, from
        blobstore's cache) and write the index rows (one per message) of the rows that were
        inserted (with ignore_conflicts, a row that hit a unique constraint is not there)."""
        objs = list(objs)
        for row in objs:
            metadata.seal_pending(row)
        inserted = None
        if not args and kwargs.keys() <= {"ignore_conflicts"} and kwargs.get("ignore_conflicts"):
            inserted = bulk_insert.insert_new(self.model, objs, using=self.db)  # None: not PostgreSQL
        created = objs if inserted is not None else super().bulk_create(objs, *args, **kwargs)
        by_owner: dict = {}
        for row in objs:
            by_owner.setdefault(row.owner_id, []).append(row)
        for owner_id, rows in by_owner.items():
            if inserted is not None:
                rows = [r for r in rows if r.pk in inserted]
            elif kwargs.get("ignore_conflicts"):
                there = set(self.get_queryset().for_owner(owner_id).filter(
                    pk__in=[r.pk for r in rows]).values_list("pk", flat=True))
                rows = [r for r in rows if r.pk in there]
            search_index.rows_write(rows, replace=False)
        return created


class Message(OwnedModel):
    """Message metadata. The body (raw RFC 5322) is an encrypted object, never a column; subject,
    addresses and snippet are sealed columns (mail/metadata.py), searchable through the keyed
    index (mail/search_index.py)."""

    objects = MessageManager()
    SEALED = metadata.MESSAGE

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="messages")
    folder = models.ForeignKey(Folder, on_delete=models.CASCADE, related_name="messages")
    uidvalidity = models.BigIntegerField(null=True, blank=True)
    uid = models.BigIntegerField(null=True, blank=True)
    provider_id = models.CharField(max_length=200, blank=True)
    message_id = models.CharField(max_length=998, blank=True)
    thread_id = models.CharField(max_length=200, blank=True)
    # Subject, from, to, cc and snippet are sealed (mail/metadata.py); the properties below read
    # and write them. The legacy_* columns held them in plaintext before; `manage.py
    # metadata_encrypt` seals and empties them, and a later release drops them.
    subject_ct = models.BinaryField(null=True, editable=False)
    from_ct = models.BinaryField(null=True, editable=False)
    to_ct = models.BinaryField(null=True, editable=False)
    cc_ct = models.BinaryField(null=True, editable=False)
    snippet_ct = models.BinaryField(null=True, editable=False)
    legacy_from_addr = models.CharField(max_length=998, blank=True, db_column="from_addr", editable=False)
    legacy_to_addrs = models.JSONField(default=list, blank=True, db_column="to_addrs", editable=False)
    legacy_cc_addrs = models.JSONField(default=list, blank=True, db_column="cc_addrs", editable=False)
    legacy_subject = models.CharField(max_length=998, blank=True, db_column="subject", editable=False)
    date = models.DateTimeField(null=True, blank=True, db_index=True)
    flags = models.JSONField(default=list, blank=True)
    labels = models.JSONField(default=list, blank=True)
    unread = models.BooleanField(default=True)
    size = models.PositiveIntegerField(default=0)
    legacy_snippet = models.CharField(max_length=300, blank=True, db_column="snippet", editable=False)
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

    subject = property(lambda self: metadata.get_value(self, "subject"),
                       lambda self, value: metadata.set_value(self, "subject", value))
    from_addr = property(lambda self: metadata.get_value(self, "from_addr"),
                         lambda self, value: metadata.set_value(self, "from_addr", value))
    to_addrs = property(lambda self: metadata.get_value(self, "to_addrs"),
                        lambda self, value: metadata.set_value(self, "to_addrs", value))
    cc_addrs = property(lambda self: metadata.get_value(self, "cc_addrs"),
                        lambda self, value: metadata.set_value(self, "cc_addrs", value))
    snippet = property(lambda self: metadata.get_value(self, "snippet"),
                       lambda self, value: metadata.set_value(self, "snippet", value))

    def save(self, *args, **kwargs):
        # The one way a row reaches the database with its metadata: sealed, then indexed. (Bulk
        # inserts go through MessageManager.bulk_create, which does the same for a batch.)
        written = metadata.seal_pending(self)
        if written and kwargs.get("update_fields") is not None:
            kwargs["update_fields"] = list({*kwargs["update_fields"], *written} - set(self.SEALED.fields))
        super().save(*args, **kwargs)
        if written:
            search_index.rows_write([self], replace=True)

    def __str__(self):
        return f"message {self.pk}"  # never the subject: admin pages and logs print this


class OutboxMessage(OwnedModel):
    """A message the user asked us to send, moving queued → sending → sent | failed | uncertain.

    `sending` is committed before the provider sees the message. Finding a row still `sending` later
    means a worker died mid-send: it becomes `uncertain` and is resolved by looking for its
    Message-ID in the Sent folder — never by sending again. An `uncertain` row ends `sent` (found)
    or, once AIEMAILY_SEND_STALE_SECONDS have passed since the send began, `failed` (not found).
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "queued"
        SENDING = "sending", "sending"
        SENT = "sent", "sent"
        FAILED = "failed", "failed"
        UNCERTAIN = "uncertain", "not sure it was sent"

    SEALED = metadata.OUTBOX
    REFUSED_SOME = "Sent, but the server refused these recipients"  # last_error; who is in refused_addrs
    LEGACY_REFUSED = "Refused by the server for: "  # how releases before issue 17 named them, in plaintext

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    connection = models.ForeignKey(Connection, on_delete=models.CASCADE, related_name="outbox")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    message_id = models.CharField(max_length=300, unique=True)
    # To, cc, subject and In-Reply-To are sealed like a message's metadata (mail/metadata.py); the
    # properties below read and write them. The legacy_* columns held them in plaintext before;
    # `manage.py metadata_encrypt` seals and empties them, and a later release drops them.
    to_ct = models.BinaryField(null=True, editable=False)
    cc_ct = models.BinaryField(null=True, editable=False)
    subject_ct = models.BinaryField(null=True, editable=False)
    in_reply_to_ct = models.BinaryField(null=True, editable=False)
    refused_ct = models.BinaryField(null=True, editable=False)
    legacy_to_addrs = models.JSONField(default=list, blank=True, db_column="to_addrs", editable=False)
    legacy_cc_addrs = models.JSONField(default=list, blank=True, db_column="cc_addrs", editable=False)
    legacy_subject = models.CharField(max_length=998, blank=True, db_column="subject", editable=False)
    legacy_in_reply_to = models.CharField(max_length=998, blank=True, db_column="in_reply_to", editable=False)
    blob_key = models.CharField(max_length=400)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sending_started_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True, help_text="the last look in the Sent folder")
    form_key = models.UUIDField(null=True, blank=True, editable=False,
                                help_text="the compose form's one-time key: a resubmitted form finds this row")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # A double-click or a browser resubmit of one compose form can never make a second row.
            models.UniqueConstraint(fields=["owner", "form_key"], name="outbox_one_row_per_form",
                                    condition=models.Q(form_key__isnull=False)),
        ]
        indexes = [models.Index(fields=["status", "sending_started_at"], name="outbox_stuck",
                                condition=models.Q(status__in=["sending", "uncertain"]))]

    to_addrs = property(lambda self: metadata.get_value(self, "to_addrs"),
                        lambda self, value: metadata.set_value(self, "to_addrs", value))
    cc_addrs = property(lambda self: metadata.get_value(self, "cc_addrs"),
                        lambda self, value: metadata.set_value(self, "cc_addrs", value))
    subject = property(lambda self: metadata.get_value(self, "subject"),
                       lambda self, value: metadata.set_value(self, "subject", value))
    in_reply_to = property(lambda self: metadata.get_value(self, "in_reply_to"),
                           lambda self, value: metadata.set_value(self, "in_reply_to", value))
    refused_addrs = property(lambda self: metadata.get_value(self, "refused_addrs"),
                             lambda self, value: metadata.set_value(self, "refused_addrs", value))

    @property
    def error_text(self) -> str:
        """last_error as the user reads it, with the refused recipients (sealed, so never in
        last_error's plaintext column) named after it."""
        refused = self.refused_addrs if self.refused_ct is not None else []
        return f"{self.last_error}: {', '.join(refused)}" if refused else self.last_error

    def save(self, *args, **kwargs):
        # Sealed on the way to the database, like a message (Message.save).
        written = metadata.seal_pending(self)
        if written and kwargs.get("update_fields") is not None:
            kwargs["update_fields"] = list({*kwargs["update_fields"], *written} - set(self.SEALED.fields))
        super().save(*args, **kwargs)

    def __str__(self):
        return f"outbox {self.pk} ({self.status})"  # never the subject: admin pages and logs print this


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


# The assistant's rows live in mail/assistant/models.py (its own zone) but belong to this app.
from mail import search_index  # noqa: E402 - its model (MessageTerms) belongs to this app
from mail.assistant.models import AiResult, AiSettings  # noqa: E402, F401
from mail.metadata_keys import MetadataKey  # noqa: E402, F401
from mail.search_index import MessageTerms  # noqa: E402, F401
