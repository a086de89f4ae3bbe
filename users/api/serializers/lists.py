from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from users.api.serializers.fields import RejectUnknownFieldsMixin, RoleField, choice_field, presence_now
from users.models import OnlineStatus, User
from users.selectors.presence import presence_shown_to


class ListedPresenceMixin(serializers.Serializer):
    """Presence as lists show it: computed now, private presence hidden from other users,
    last_seen only for offline users (users.selectors.presence.presence_shown_to)."""

    online_status = serializers.SerializerMethodField()
    last_seen = serializers.SerializerMethodField()

    def _shown(self, user):
        return presence_shown_to(viewer=self.context["request"].user, user=user, now=presence_now(self.context))

    def get_online_status(self, user) -> str:
        return self._shown(user).status

    @extend_schema_field(serializers.DateTimeField(allow_null=True))
    def get_last_seen(self, user):
        last_seen = self._shown(user).last_seen
        return serializers.DateTimeField().to_representation(last_seen) if last_seen else None


class DirectoryUserSerializer(ListedPresenceMixin, serializers.ModelSerializer):
    """What any signed-in user may see of another: no email, no staff flags."""

    class Meta:
        model = User
        fields = ["id", "username", "first_name", "last_name", "online_status", "last_seen"]
        read_only_fields = fields


class AdminUserSerializer(ListedPresenceMixin, serializers.ModelSerializer):
    is_online = serializers.SerializerMethodField()
    role = RoleField()

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
        ]
        read_only_fields = fields

    def get_is_online(self, user) -> bool:
        return self._shown(user).status == OnlineStatus.ONLINE


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
