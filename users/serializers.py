from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt import serializers as jwt_serializers
from rest_framework_simplejwt.tokens import RefreshToken

from users.authentication import session_of_token
from users.models import OnlineStatus, PresenceSession, ReportedStatus, SessionEndReason, User
from users.selectors.presence import effective_status, presence_shown_to


def _choice_field(choices, name, **kwargs):
    allowed = ", ".join(value for value, _ in choices)
    return serializers.ChoiceField(
        choices=choices,
        error_messages={"invalid_choice": f'"{{input}}" is not a valid {name}. Allowed values: {allowed}.'},
        **kwargs,
    )


class RejectUnknownFieldsMixin:
    """Input naming a field the serializer does not write is refused (400), not ignored: a
    misspelt `{"stauts": "away"}` would otherwise be a heartbeat saying online, and a sent
    `is_staff` would look accepted."""

    rejects_unknown_fields = True  # the OpenAPI schema says so (offchat_backend.openapi)

    def to_internal_value(self, data):
        if hasattr(data, "keys"):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unexpected = sorted(set(data.keys()) - writable)
            if unexpected:
                raise serializers.ValidationError(
                    {
                        name: ["This field is read-only." if name in self.fields else "Unknown field."]
                        for name in unexpected
                    }
                )
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """JSON true or false only: DRF's BooleanField also takes "yes", "0", 1 and the like, which
    the schema does not promise and a client should not rely on."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictCharField(serializers.CharField):
    """JSON strings only: DRF's CharField turns a number into its digits."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


def _presence_now(context):
    """One clock reading per request, so that every row of a list is judged at one moment."""
    return context.get("presence_now") or timezone.now()


class ListedPresenceMixin(serializers.Serializer):
    """Presence as lists show it: computed now, private presence hidden from other users,
    last_seen only for offline users (users.selectors.presence.presence_shown_to)."""

    online_status = serializers.SerializerMethodField()
    last_seen = serializers.SerializerMethodField()

    def _shown(self, user):
        return presence_shown_to(viewer=self.context["request"].user, user=user, now=_presence_now(self.context))

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

    class Meta:
        model = User
        fields = DirectoryUserSerializer.Meta.fields + [
            "is_online",
            "manual_status",
            "share_presence",
            "email",
            "is_staff",
            "is_active",
            "date_joined",
        ]
        read_only_fields = fields

    def get_is_online(self, user) -> bool:
        return self._shown(user).status == OnlineStatus.ONLINE


class ComputedStatusMixin(serializers.Serializer):
    """`online_status` as computed now, for the user themselves or staff (no privacy filter)."""

    online_status = serializers.SerializerMethodField()

    def get_online_status(self, user) -> str:
        return effective_status(user=user, now=_presence_now(self.context))


class PresenceSerializer(ComputedStatusMixin, serializers.Serializer):
    """One user's presence in full, for that user and for staff.

    A plain Serializer, not a ModelSerializer: every heartbeat answers with it, and building a
    ModelSerializer's fields from the model on each request cost more than the rest of the
    heartbeat's view (measured in bench/REPORT.md).
    """

    id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(read_only=True)
    last_seen = serializers.DateTimeField(read_only=True, allow_null=True)
    last_active = serializers.DateTimeField(read_only=True, allow_null=True)
    manual_status = serializers.ChoiceField(choices=ReportedStatus.choices, read_only=True, allow_null=True)
    share_presence = serializers.BooleanField(read_only=True)
    is_online = serializers.SerializerMethodField()

    def get_is_online(self, user) -> bool:
        return self.get_online_status(user) == OnlineStatus.ONLINE


class HeartbeatIntervalMixin(serializers.Serializer):
    heartbeat_interval = serializers.SerializerMethodField(help_text="Seconds between heartbeats.")

    def get_heartbeat_interval(self, instance) -> int:
        return settings.PRESENCE_HEARTBEAT_INTERVAL


class HeartbeatResponseSerializer(PresenceSerializer, HeartbeatIntervalMixin):
    """What a heartbeat answers. The view builds it with heartbeat_answer() instead: DRF
    deep-copies a serializer's fields for every instance, and on the busiest endpoint that
    copy cost a tenth of the request (bench/REPORT.md). A test keeps the two identical."""


_DATETIME = serializers.DateTimeField()


def heartbeat_answer(user, *, now) -> dict:
    status = effective_status(user=user, now=now)
    return {
        "online_status": status,
        "id": user.pk,
        "username": user.username,
        "last_seen": _DATETIME.to_representation(user.last_seen) if user.last_seen else None,
        "last_active": _DATETIME.to_representation(user.last_active) if user.last_active else None,
        "manual_status": user.manual_status,
        "share_presence": user.share_presence,
        "is_online": status == OnlineStatus.ONLINE,
        "heartbeat_interval": settings.PRESENCE_HEARTBEAT_INTERVAL,
    }


class AccountSerializer(RejectUnknownFieldsMixin, ComputedStatusMixin, serializers.ModelSerializer):
    """The signed-in user's own account: returned at login, read and edited at /me/."""

    share_presence = StrictBooleanField(required=False)
    # Names are the other writable fields: strings only, like share_presence is booleans only.
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
    }

    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "first_name",
            "last_name",
            "email",
            "is_staff",
            "share_presence",
            "online_status",
            "last_seen",
        ]
        # Writable: first_name, last_name, share_presence. Nothing else, so no request can make
        # a user staff or rename them (mass assignment).
        read_only_fields = ["id", "username", "email", "is_staff", "online_status", "last_seen"]


class HeartbeatSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    status = _choice_field(ReportedStatus.choices, "status", required=False, default=ReportedStatus.ONLINE)


class ManualPresenceSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """`null` clears the manual status: presence follows the sessions again."""

    status = _choice_field(ReportedStatus.choices, "status", allow_null=True)


class SessionSerializer(serializers.ModelSerializer):
    is_current = serializers.SerializerMethodField()
    # Blank while the session is live.
    end_reason = serializers.ChoiceField(choices=SessionEndReason.choices, allow_blank=True, read_only=True)

    class Meta:
        model = PresenceSession
        fields = [
            "id",
            "user_agent",
            "ip_address",
            "created_at",
            "last_seen",
            "last_active",
            "reported_status",
            "is_live",
            "ended_at",
            "end_reason",
            "revoked_at",
            "is_current",
        ]
        read_only_fields = fields

    def get_is_current(self, session) -> bool:
        current = getattr(self.context["request"].user, "presence_session", None)
        return current is not None and current.pk == session.pk


class SetOnlineStatusSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    online_status = _choice_field(OnlineStatus.choices, "online_status")


class LoginSerializer(RejectUnknownFieldsMixin, jwt_serializers.TokenObtainSerializer):
    """Checks the credentials only (simplejwt's generic 401 for wrong, unknown or inactive
    accounts alike); tokens are issued by the login service."""


class LoginResponseSerializer(HeartbeatIntervalMixin, serializers.Serializer):
    access = serializers.CharField(help_text="Send as `Authorization: Bearer <access>`.")
    refresh = serializers.CharField(help_text="Single use: /token/refresh/ returns a new pair.")
    session_id = serializers.UUIDField(source="session.pk", help_text="This device's presence session.")
    user = AccountSerializer(source="session.user")


class LogoutSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    refresh = serializers.CharField()


class TokenRefreshSerializer(RejectUnknownFieldsMixin, jwt_serializers.TokenRefreshSerializer):
    """simplejwt's refresh, refused for a revoked session, and a 401 (not a 500) for a token
    whose user was deleted."""

    def validate(self, attrs):
        session_of_token(RefreshToken(attrs["refresh"]))
        try:
            return super().validate(attrs)
        except get_user_model().DoesNotExist as missing:
            raise AuthenticationFailed(self.error_messages["no_active_account"], "no_active_account") from missing


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


class PresenceSummarySerializer(serializers.Serializer):
    """Active users per shown status (users.selectors.presence.status_counts)."""

    online = serializers.IntegerField()
    away = serializers.IntegerField()
    offline = serializers.IntegerField()
    total = serializers.IntegerField()


class HealthCheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    reason = serializers.CharField(required=False, help_text="Why the check failed.")
    vendor = serializers.CharField(required=False, help_text="Database: postgresql or sqlite.")
    backend = serializers.CharField(required=False, help_text="Cache: RedisCache or LocMemCache.")
    transport = serializers.CharField(required=False, help_text="Broker: redis or filesystem.")


class SweeperCheckSerializer(HealthCheckSerializer):
    last_completed_at = serializers.DateTimeField(required=False)
    age_seconds = serializers.FloatField(required=False)
    max_age_seconds = serializers.IntegerField()
    users_marked_offline = serializers.IntegerField(required=False, help_text="By the last sweep.")
    sessions_ended = serializers.IntegerField(required=False, help_text="By the last sweep.")
    duration_ms = serializers.FloatField(required=False)


class HealthChecksSerializer(serializers.Serializer):
    database = HealthCheckSerializer()
    cache = HealthCheckSerializer()
    broker = HealthCheckSerializer()
    sweeper = SweeperCheckSerializer()


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "degraded", "unavailable"])
    reasons = serializers.ListField(child=serializers.CharField())
    checks = HealthChecksSerializer()
