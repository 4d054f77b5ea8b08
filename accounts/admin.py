"""Staff see users' metadata only: no password hash, no secret material, ever."""

from django.contrib import admin

from accounts.models import User


@admin.register(User)
class UserAdmin(admin.ModelAdmin):
    list_display = ("email", "display_name", "is_active", "is_staff", "date_joined", "last_login")
    list_filter = ("is_active", "is_staff")
    search_fields = ("email", "display_name")
    ordering = ("-date_joined",)
    fields = ("id", "email", "display_name", "is_active", "is_staff", "date_joined", "last_login")
    readonly_fields = ("id", "date_joined", "last_login")
