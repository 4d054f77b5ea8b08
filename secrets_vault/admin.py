"""Staff view of the audit trail: what happened to which kind of secret, never the secret."""

from django.contrib import admin

from aiemaily.admin_base import OwnedMetadataAdmin
from secrets_vault.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(OwnedMetadataAdmin):
    list_display = ("created_at", "owner", "action", "purpose", "process")
    list_filter = ("action", "process")
    fields = ("id", "owner", "created_at", "action", "purpose", "process", "subject", "detail")
    readonly_fields = fields
