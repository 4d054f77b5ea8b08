"""Staff view of connections and messages: status and plain metadata; no secret, no message content."""

from django.contrib import admin

from aiemaily.admin_base import OwnedMetadataAdmin
from mail.models import Connection, Message

ENCRYPTED = "encrypted"


@admin.register(Connection)
class ConnectionAdmin(OwnedMetadataAdmin):
    list_display = ("id", "owner", "provider", "status", "created_at", "verified_at")
    list_filter = ("provider", "status")
    fields = ("id", "owner", "provider", "status", "last_error", "requested_scopes", "granted_scopes",
              "imap_host", "imap_port", "imap_security", "smtp_host", "smtp_port", "smtp_security", "created_at",
              "updated_at", "verified_at")
    readonly_fields = fields


@admin.register(Message)
class MessageAdmin(OwnedMetadataAdmin):
    """Dates, sizes, flags and ids are plain columns and shown; subject, addresses and snippet are
    ciphertext under the owner's keys and shown as "encrypted" without trying to open them (the
    admin process holds no storage key, and staff have no business reading mail)."""

    list_display = ("id", "owner", "date", "size", "unread", "subject_shown", "from_shown")
    fields = ("id", "owner", "connection", "folder", "date", "size", "unread", "flags", "labels", "created_at",
              "subject_shown", "from_shown", "to_shown", "cc_shown", "snippet_shown")
    readonly_fields = fields
    list_select_related = ("owner",)

    @admin.display(description="subject")
    def subject_shown(self, obj):
        return ENCRYPTED

    @admin.display(description="from")
    def from_shown(self, obj):
        return ENCRYPTED

    @admin.display(description="to")
    def to_shown(self, obj):
        return ENCRYPTED

    @admin.display(description="cc")
    def cc_shown(self, obj):
        return ENCRYPTED

    @admin.display(description="snippet")
    def snippet_shown(self, obj):
        return ENCRYPTED
