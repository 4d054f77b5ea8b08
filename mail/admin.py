"""Staff view of connections: status and provider metadata; no secret, no message content."""

from django.contrib import admin

from aiemaily.admin_base import OwnedMetadataAdmin
from mail.models import Connection


@admin.register(Connection)
class ConnectionAdmin(OwnedMetadataAdmin):
    list_display = ("id", "owner", "provider", "status", "created_at", "verified_at")
    list_filter = ("provider", "status")
    fields = ("id", "owner", "provider", "status", "last_error", "requested_scopes", "granted_scopes",
              "imap_host", "imap_port", "imap_security", "smtp_host", "smtp_port", "smtp_security", "created_at",
              "updated_at", "verified_at")
    readonly_fields = fields
