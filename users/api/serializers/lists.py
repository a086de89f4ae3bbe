from functools import cached_property

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from users.api.serializers.fields import (
    RejectUnknownFieldsMixin,
    RoleField,
    account_email_field,
    choice_field,
    join_date_field,
    presence_now,
    timestamp,
)
from users.models import OnlineStatus, User
from users.selectors.accounts import role_of
from users.selectors.presence import presence_seen_by


class ListedPresenceMixin(serializers.Serializer):
    """Presence as lists show it: computed now, private presence hidden from other users,
    last_seen only for offline users (users.selectors.presence.presence_shown_to), and
    last_active (the last real input) only for users shown away.

    last_active is a timestamp, not an "ago" figure: it moves with real input only. It is
    left out (null) for online users because their every online heartbeat is real input:
    it would change the row, and so the list's ETag, every heartbeat interval. An online
    user was active within PRESENCE_AWAY_AFTER by definition; for an away user it says how
    long ago ("away, active 12 min ago") and stays put while they are away.
    """

    online_status = serializers.SerializerMethodField()
    last_seen = serializers.SerializerMethodField()
    last_active = serializers.SerializerMethodField()

    @cached_property
    def _viewing(self):
        """What the viewer sees of a user now, and in which time zone: read once for all the rows
        (a list's rows share one child serializer)."""
        seen = presence_seen_by(viewer=self.context["request"].user, now=presence_now(self.context))
        return seen, timezone.get_current_timezone()

    def _shown(self, user):
        return self._viewing[0](user)

    def get_online_status(self, user) -> str:
        return self._shown(user).status

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_last_seen(self, user):
        last_seen = self._shown(user).last_seen
        return serializers.DateTimeField().to_representation(last_seen) if last_seen else None

    @extend_schema_field(
        serializers.DateTimeField(
            allow_null=True, help_text="The last real input, for users shown away; null for online and offline users."
        )
    )
    def get_last_active(self, user):
        shown_away = self._shown(user).status == OnlineStatus.AWAY
        return (
            serializers.DateTimeField().to_representation(user.last_active) if shown_away and user.last_active else None
        )


class FastRowsMixin:
    """A row built by hand from what presence_shown_to says once, not field by field.

    The declared fields stay the schema (and the DRF form a test keeps this identical to);
    rendering them field by field computed the shown presence three times a row and cost
    most of an admin page of 50 rows (bench/REPORT.md, row 5). DRF builds a serializer's
    fields lazily: a list never builds them at all now."""

    def to_representation(self, user):
        shown, tz = self._shown(user), self._viewing[1]
        row = {
            "id": user.pk,
            "username": user.username,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "online_status": shown.status,
            "last_seen": timestamp(shown.last_seen, tz=tz),
            "last_active": timestamp(user.last_active, tz=tz) if shown.status == OnlineStatus.AWAY else None,
        }
        return self.with_more_of(user, row, shown, tz=tz)

    def with_more_of(self, user, row: dict, shown, *, tz) -> dict:
        return row

    def to_representation_field_by_field(self, user):
        """DRF's own rendering of the declared fields: what to_representation must equal."""
        return super().to_representation(user)


class DirectoryUserSerializer(FastRowsMixin, ListedPresenceMixin, serializers.ModelSerializer):
    """What any signed-in user may see of another: no email, no staff flags."""

    class Meta:
        model = User
        fields = ["id", "username", "first_name", "last_name", "online_status", "last_seen", "last_active"]
        read_only_fields = fields


class AdminUserSerializer(FastRowsMixin, ListedPresenceMixin, serializers.ModelSerializer):
    is_online = serializers.SerializerMethodField()
    role = RoleField()
    join_date = join_date_field()
    email = account_email_field()

    class Meta:
        model = User
        fields = DirectoryUserSerializer.Meta.fields + [
            "is_online",
            "manual_status",
            "share_presence",
            "email",
            "is_staff",
            "role",
            "is_active",
            "date_joined",
            "join_date",
        ]
        read_only_fields = fields

    def get_is_online(self, user) -> bool:
        return self._shown(user).status == OnlineStatus.ONLINE

    def with_more_of(self, user, row: dict, shown, *, tz) -> dict:
        row["is_online"] = shown.status == OnlineStatus.ONLINE
        row["manual_status"] = user.manual_status
        row["share_presence"] = user.share_presence
        row["email"] = user.email
        row["is_staff"] = user.is_staff
        row["role"] = role_of(user)
        row["is_active"] = user.is_active
        row["date_joined"] = row["join_date"] = timestamp(user.date_joined, tz=tz)
        return row


class SetOnlineStatusSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    online_status = choice_field(OnlineStatus.choices, "online_status")


class PresenceSummarySerializer(serializers.Serializer):
    """Active users per shown status (users.selectors.presence.status_counts)."""

    online = serializers.IntegerField()
    away = serializers.IntegerField()
    offline = serializers.IntegerField()
    total = serializers.IntegerField()


class DashboardStatsSerializer(serializers.Serializer):
    """The OffChat frontend's dashboard card: `{users: {total, online, away, offline}}`."""

    users = PresenceSummarySerializer()


class ForceLogoutSerializer(serializers.Serializer):
    detail = serializers.CharField()
    sessions_ended = serializers.IntegerField(help_text="Sessions that were live or idle and are now revoked.")
