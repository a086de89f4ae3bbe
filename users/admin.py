from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import AdminUserCreationForm
from django.core.exceptions import ValidationError
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.html import format_html

from users.models import PRESENCE_FIELDS, OnlineStatus, PresenceSession, User
from users.presence_rules import effective_status_expression, status_q, status_rank_expression
from users.selectors.accounts import username_taken
from users.services import auth, presence

PRESENCE_FIELD_ORDER = ["online_status", "last_seen", "last_active", "manual_status", "share_presence"]
STATUS_COLOURS = {OnlineStatus.ONLINE: "#16a34a", OnlineStatus.AWAY: "#d97706", OnlineStatus.OFFLINE: "#9ca3af"}


class ShownStatusFilter(admin.SimpleListFilter):
    """Filters on the status as computed now, as the API shows it, not on the stored column."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return OnlineStatus.choices

    def queryset(self, request, queryset):
        if self.value() in OnlineStatus.values:
            return queryset.filter(status_q(self.value(), now=timezone.now()))
        return queryset


class PresenceSessionInline(admin.TabularInline):
    model = PresenceSession
    fields = ["created_at", "user_agent", "ip_address", "last_seen", "reported_status", "ended_at", "end_reason"]
    readonly_fields = fields
    ordering = ["-created_at"]
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False


class AddUserForm(AdminUserCreationForm):
    def clean_username(self):
        """Django's refusal of a name that differs only in case, asked through the index
        (accounts.username_taken), not by reading every account's name."""
        username = self.cleaned_data.get("username")
        if username and username_taken(username=username):
            raise ValidationError(self.instance.unique_error_message(User, ["username"]))
        return username


@admin.register(User)
class PresenceUserAdmin(UserAdmin):
    add_form = AddUserForm
    list_display = ["username", "email", "status", "last_seen", "live_sessions", "is_staff", "is_active"]
    list_filter = [ShownStatusFilter, *UserAdmin.list_filter]
    # Presence is written by users.services.presence only; the admin shows it.
    readonly_fields = sorted(PRESENCE_FIELDS)
    fieldsets = [*UserAdmin.fieldsets, ("Presence", {"fields": PRESENCE_FIELD_ORDER})]
    inlines = [PresenceSessionInline]
    actions = ["mark_offline", "sign_out_everywhere"]

    def get_queryset(self, request):
        now = timezone.now()
        return (
            super()
            .get_queryset(request)
            .annotate(
                shown_status=effective_status_expression(now=now),
                shown_status_rank=status_rank_expression(now=now),
                live_session_count=Count("presence_sessions", filter=Q(presence_sessions__ended_at__isnull=True)),
            )
        )

    # Ranked like the API's ?ordering=online_status: descending lists online, away, offline.
    @admin.display(description="status", ordering="shown_status_rank")
    def status(self, user):
        return format_html(
            '<span style="color:{}">&#9679;</span> {}', STATUS_COLOURS[user.shown_status], user.shown_status
        )

    @admin.display(description="live sessions", ordering="live_session_count")
    def live_sessions(self, user):
        return user.live_session_count

    @admin.action(description="Mark offline now (their apps reconnect on their next request)")
    def mark_offline(self, request, queryset):
        users = list(queryset)
        for user in users:
            presence.admin_set_status(user=user, status=OnlineStatus.OFFLINE)
        self.message_user(request, f"Marked {len(users)} user(s) offline.", messages.SUCCESS)

    @admin.action(description="Sign out of every device (revokes their sessions)")
    def sign_out_everywhere(self, request, queryset):
        ended = sum(auth.end_every_session(user=user) for user in queryset)
        self.message_user(request, f"Ended {ended} session(s).", messages.SUCCESS)
