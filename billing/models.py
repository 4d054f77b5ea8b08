"""Billing state: one owned row per user, and the Stripe closures account deletion still owes.

Only Stripe's identifiers and the subscription's status are kept (DESIGN.md promise 9): no card
data, no billing address, no invoices. Everything here is written from verified Stripe events
(billing/events.py), never from a browser redirect.
"""

import uuid

from django.db import models
from django.db.models import Q

from aiemaily.ownership.models import OwnedModel


class BillingAccount(OwnedModel):
    class Status(models.TextChoices):
        # Stripe's subscription statuses, plus "" for "never subscribed".
        NONE = "", "none"
        INCOMPLETE = "incomplete"
        INCOMPLETE_EXPIRED = "incomplete_expired"
        TRIALING = "trialing"
        ACTIVE = "active"
        PAST_DUE = "past_due"
        CANCELED = "canceled"
        UNPAID = "unpaid"
        PAUSED = "paused"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    stripe_customer_id = models.CharField(max_length=255, blank=True, default="")
    stripe_subscription_id = models.CharField(max_length=255, blank=True, default="")
    stripe_price_id = models.CharField(max_length=255, blank=True, default="")
    plan = models.CharField(max_length=32, default="free")
    status = models.CharField(max_length=32, choices=Status.choices, blank=True, default="")
    current_period_end = models.DateTimeField(null=True, blank=True)
    cancel_at_period_end = models.BooleanField(default=False)
    # Our own bookkeeping, not Stripe data: when the stored state was true at Stripe (the `created`
    # time of the event it came from, or of the re-fetch), so an older event never overwrites it;
    # and when the subscription became past_due, which starts the grace period.
    state_as_of = models.DateTimeField(null=True, blank=True)
    past_due_since = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["owner"], name="billing_account_one_per_owner"),
            models.UniqueConstraint(fields=["stripe_customer_id"], condition=~Q(stripe_customer_id=""),
                                    name="billing_account_customer_unique"),
        ]

    def __str__(self):
        return f"{self.plan} ({self.status or 'none'})"


class StripeCleanup(models.Model):
    """A Stripe customer of a deleted account still to be closed (subscription cancelled, customer
    deleted). Not owned: the user row is gone by the time the retry runs. Holds Stripe ids only."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    stripe_customer_id = models.CharField(max_length=255, unique=True)
    stripe_subscription_id = models.CharField(max_length=255, blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    done_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"cleanup {self.stripe_customer_id} ({'done' if self.done_at else 'pending'})"
