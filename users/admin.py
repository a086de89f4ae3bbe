from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from users.models import User


@admin.register(User)
class PresenceUserAdmin(UserAdmin):
    list_display = ["username", "email", "online_status", "last_seen", "is_staff", "is_active"]
    list_filter = ["online_status", *UserAdmin.list_filter]
    # Presence is written by users.services.presence only; the admin shows it.
    readonly_fields = ["online_status", "last_seen"]
    fieldsets = [*UserAdmin.fieldsets, ("Presence", {"fields": ["online_status", "last_seen"]})]
