"""Staff view of webhook activity: read-only metadata (provider, id, verdict, time), audited reads."""

from django.contrib import admin

from aiemaily.admin_base import OwnedMetadataAdmin
from aiemaily.webhooks.models import WebhookDelivery, WebhookSubscription


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(OwnedMetadataAdmin):
    list_display = ("received_at", "provider", "verdict", "kind", "delivery_id", "account", "processed_at")
    list_filter = ("provider", "verdict")
    fields = ("id", "provider", "delivery_id", "kind", "verdict", "received_at", "processed_at", "account")
    readonly_fields = fields
    date_hierarchy = "received_at"


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(OwnedMetadataAdmin):
    # secret_hash and external_id (a keyed hash of a Gmail address) are not shown: nobody needs them.
    list_display = ("provider", "account", "connection_id", "expires_at", "renewed_at")
    list_filter = ("provider",)
    fields = ("id", "provider", "account", "connection_id", "expires_at", "cursor", "created_at", "renewed_at")
    readonly_fields = fields
