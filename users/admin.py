from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from users.models import PRESENCE_FIELDS, User

PRESENCE_FIELD_ORDER = ["online_status", "last_seen", "last_active", "manual_status", "share_presence"]


@admin.register(User)
class PresenceUserAdmin(UserAdmin):
    list_display = ["username", "email", "online_status", "last_seen", "is_staff", "is_active"]
    list_filter = ["online_status", *UserAdmin.list_filter]
    # Presence is written by users.services.presence only; the admin shows it.
    readonly_fields = sorted(PRESENCE_FIELDS)
    fieldsets = [*UserAdmin.fieldsets, ("Presence", {"fields": PRESENCE_FIELD_ORDER})]
