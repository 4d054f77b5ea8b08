"""Read-only admin for owned models: metadata only, through the named, audited unscoped path."""

from django.contrib import admin


class OwnedMetadataAdmin(admin.ModelAdmin):
    """Staff can look, never change: owned rows belong to their owners, and writing them as staff
    would go around both owner-scoping layers. Every list and detail view is one audited
    `unscoped()` read on the maintenance (BYPASSRLS) connection."""

    def get_queryset(self, request):
        return self.model.objects.unscoped(reason=f"admin: {request.user.email} viewed {self.model._meta.label}")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
