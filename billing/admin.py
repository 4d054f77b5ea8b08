"""Staff view of billing: plan and subscription status only. There is no card data to show: none is
ever stored (DESIGN.md promise 9)."""

from django.contrib import admin

from aiemaily.admin_base import OwnedMetadataAdmin
from billing.models import BillingAccount, StripeCleanup


@admin.register(BillingAccount)
class BillingAccountAdmin(OwnedMetadataAdmin):
    list_display = ("id", "owner", "plan", "status", "current_period_end", "cancel_at_period_end")
    list_filter = ("plan", "status")
    fields = ("id", "owner", "plan", "status", "stripe_customer_id", "stripe_subscription_id", "stripe_price_id",
              "current_period_end", "cancel_at_period_end", "past_due_since", "state_as_of", "updated_at")
    readonly_fields = fields


@admin.register(StripeCleanup)
class StripeCleanupAdmin(admin.ModelAdmin):
    """Closures at Stripe that account deletion still owes (Stripe ids only; the user is gone)."""

    list_display = ("stripe_customer_id", "attempts", "last_error", "created_at", "done_at")
    readonly_fields = ("stripe_customer_id", "stripe_subscription_id", "attempts", "last_error", "created_at",
                       "done_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
