"""The webhook ledger and the subscription registry.

Both are *system* tables, not OwnedModels under row-level security, and that is on purpose: a
delivery arrives with nobody signed in, and the web tier must record it (and, for Gmail and Graph,
find whose mailbox it concerns) before it knows an owner. RLS's WITH CHECK would refuse such an
insert from the app role, and the web tier never holds the BYPASSRLS maintenance role. So:
- the rows hold no user data: provider, the provider's delivery id, verdict, time, an optional
  link to the account once known; a keyed hash (Gmail address) or a hash (Graph clientState) in
  the registry; never a payload body, a token or a secret;
- reads go through `for_account(user)` (the per-user activity page) or `unscoped(reason=...)`,
  which writes an audit line, as OwnedModel's do; a query that says neither raises.
"""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from aiemaily.ownership.models import OwnedQuerySet, UnscopedQueryError, audit_logger


class Provider(models.TextChoices):
    STRIPE = "stripe", "Stripe"
    GMAIL = "gmail", "Gmail push"
    GRAPH = "graph", "Microsoft Graph"


class Verdict(models.TextChoices):
    ACCEPTED = "accepted", "accepted"
    BAD_SIGNATURE = "bad_signature", "bad signature"
    BAD_AUDIENCE = "bad_audience", "wrong audience, issuer or sender"
    STALE = "stale", "too old"
    FUTURE = "future", "dated in the future"
    REPLAY = "replay", "replayed"
    MALFORMED = "malformed", "malformed"
    UNKNOWN_SUBSCRIPTION = "unknown_subscription", "unknown subscription"


class AccountScopedQuerySet(OwnedQuerySet):
    """OwnedQuerySet's refusal of unscoped reads, keyed on `account` and without RLS underneath.

    `unscoped` stays on the default alias: these tables have no RLS to bypass, and the web tier,
    which writes them, must not hold the maintenance role.
    """

    def for_owner(self, owner):
        return self.for_account(owner)

    def for_account(self, account):
        if account is None or getattr(account, "pk", account) is None:
            raise UnscopedQueryError("for_account() needs a saved user or a user id")
        clone = self.filter(account=account)
        clone._owner_scoped = True
        return clone

    def unscoped(self, *, reason: str):
        if not reason or not reason.strip():
            raise ValueError("unscoped() needs a reason, which is written to the audit log")
        audit_logger.warning("unscoped query on %s: %s", self.model._meta.label, reason,
                             extra={"event": "unscoped_query"})
        clone = self._clone()
        clone._owner_scoped = True
        return clone


class AccountScopedManager(models.Manager.from_queryset(AccountScopedQuerySet)):
    pass


class WebhookDelivery(models.Model):
    """One inbound delivery and what we decided about it. No payload, no secret material."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    provider = models.CharField(max_length=16, choices=Provider.choices)
    delivery_id = models.CharField(max_length=255, blank=True,
                                   help_text="Stripe event id, Pub/Sub messageId, or a digest of a Graph item; "
                                             "as sent (cut and cleaned) when the delivery was not authentic")
    kind = models.CharField(max_length=64, blank=True,
                            help_text="Stripe event type, Graph change type or lifecycle event, 'push'")
    verdict = models.CharField(max_length=24, choices=Verdict.choices)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True,
                                        help_text="set once by the task that processed an accepted delivery")
    account = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                                related_name="+", help_text="whom the delivery concerns, once known")

    objects = AccountScopedManager()

    class Meta:
        ordering = ["-received_at"]
        constraints = [
            # The replay check. Only accepted rows take part: a forged delivery carrying a real id
            # (rejected, so recorded as bad_signature) must not block the genuine one arriving later.
            models.UniqueConstraint(fields=["provider", "delivery_id"], condition=models.Q(verdict="accepted"),
                                    name="webhook_delivery_accepted_once"),
            models.CheckConstraint(condition=~models.Q(verdict="accepted") | ~models.Q(delivery_id=""),
                                   name="webhook_delivery_accepted_has_id"),
        ]
        indexes = [models.Index(fields=["account", "-received_at"], name="webhook_account_recent")]

    def __str__(self):
        return f"<WebhookDelivery {self.provider} {self.verdict} {self.received_at:%Y-%m-%d %H:%M:%S}>"

    __repr__ = __str__


class WebhookSubscription(models.Model):
    """A push channel we opened at a provider for one mailbox: a Gmail watch or a Graph subscription.

    The web tier finds the mailbox a delivery concerns here: by Graph subscription id, or by a keyed
    hash of the Gmail address (the address itself is not stored). Graph's clientState is kept only
    as a keyed hash and compared in constant time.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    provider = models.CharField(max_length=16, choices=Provider.choices)
    external_id = models.CharField(max_length=255, help_text="Graph subscription id, or the keyed hash of the "
                                                             "Gmail address")
    account = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    connection_id = models.UUIDField(help_text="the mailbox (mail.Connection) this channel belongs to")
    secret_hash = models.CharField(max_length=64, blank=True, help_text="keyed hash of Graph's clientState")
    expires_at = models.DateTimeField(null=True, blank=True)
    cursor = models.BigIntegerField(null=True, blank=True,
                                    help_text="Gmail: the highest historyId a push has queued a sync for")
    created_at = models.DateTimeField(default=timezone.now)
    renewed_at = models.DateTimeField(default=timezone.now)

    objects = AccountScopedManager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "external_id"], name="webhook_subscription_external_unique"),
            models.UniqueConstraint(fields=["provider", "connection_id"],
                                    name="webhook_subscription_one_per_mailbox"),
        ]

    def __str__(self):
        return f"<WebhookSubscription {self.provider} {self.connection_id}>"

    __repr__ = __str__
