from collections.abc import Mapping

from django.conf import settings
from django.db import models
from django.utils import timezone
from rest_framework import serializers

from users.api.serializers.fields import (
    PASSWORD_MAX_LENGTH,
    RejectUnknownFieldsMixin,
    RoleField,
    StrictBooleanField,
    StrictCharField,
    account_email_field,
    choice_field,
    join_date_field,
    presence_now,
    timestamp,
)
from users.models import OnlineStatus, PresenceSession, ReportedStatus, SessionEndReason, User
from users.presence_rules import effective_status


class ComputedStatusMixin(serializers.Serializer):
    """`online_status` as computed now, for the user themselves or staff (no privacy filter)."""

    online_status = serializers.SerializerMethodField()

    def get_online_status(self, user) -> str:
        return effective_status(user=user, now=presence_now(self.context))


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


def heartbeat_answer(user, *, now) -> dict:
    status = effective_status(user=user, now=now)
    tz = timezone.get_current_timezone()
    return {
        "online_status": status,
        "id": user.pk,
        "username": user.username,
        "last_seen": timestamp(user.last_seen, tz=tz),
        "last_active": timestamp(user.last_active, tz=tz),
        "manual_status": user.manual_status,
        "share_presence": user.share_presence,
        "is_online": status == OnlineStatus.ONLINE,
        "heartbeat_interval": settings.PRESENCE_HEARTBEAT_INTERVAL,
    }


class AccountSerializer(RejectUnknownFieldsMixin, ComputedStatusMixin, serializers.ModelSerializer):
    """The signed-in user's own account: returned at login, read and edited at /me/.

    `current_password` with `new_password` changes the password (users.services.auth.change_password);
    neither is ever answered."""

    share_presence = StrictBooleanField(required=False)
    role = RoleField()
    join_date = join_date_field()
    email = account_email_field()
    current_password = StrictCharField(
        write_only=True, required=False, trim_whitespace=False, max_length=PASSWORD_MAX_LENGTH
    )
    new_password = StrictCharField(
        write_only=True,
        required=False,
        trim_whitespace=False,
        max_length=PASSWORD_MAX_LENGTH,
        help_text="With `current_password`: every other session of the user ends.",
    )
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
            "role",
            "share_presence",
            "online_status",
            "last_seen",
            "date_joined",
            "join_date",
            "current_password",
            "new_password",
        ]
        # Writable: first_name, last_name, share_presence and the password (with the current
        # one). Nothing else, so no request can make a user staff or rename them (mass assignment).
        read_only_fields = ["id", "username", "email", "is_staff", "role", "online_status", "last_seen", "date_joined"]

    def validate(self, attrs):
        given = {"current_password", "new_password"} & attrs.keys()
        if len(given) == 1:
            (missing,) = {"current_password", "new_password"} - given
            raise serializers.ValidationError({missing: ["Send both current_password and new_password."]})
        return attrs


class HeartbeatSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    status = choice_field(ReportedStatus.choices, "status", required=False, default=ReportedStatus.ONLINE)
    logout = StrictBooleanField(
        required=False,
        default=False,
        help_text="`true`: the page is being closed (the OffChat frontend's unload beacon): this session "
        "ends as with a logout without a body, and the answer is the logout's.",
    )

    def validate(self, attrs):
        if attrs["logout"] and "status" in self.initial_data:
            raise serializers.ValidationError({"status": ["A heartbeat that logs out reports no status."]})
        return attrs


_HEARTBEAT_FIELDS = frozenset(HeartbeatSerializer._declared_fields)
_REPORTED_STATUSES = frozenset(ReportedStatus.values)


def read_heartbeat(data) -> dict:
    """HeartbeatSerializer's validated data. The bodies clients send (none, `{}`, a valid
    `status`, `{"logout": true}`) are read as they stand; any other goes through the
    serializer, so that every error is its own. Building the serializer and its fields for
    each request took about 0.1 ms, 5-8% of a heartbeat in process (profiled for issue 22).
    A test keeps both forms identical."""
    if isinstance(data, Mapping) and data.keys() <= _HEARTBEAT_FIELDS:
        status = data.get("status", ReportedStatus.ONLINE)
        logout = data.get("logout", False)
        if isinstance(status, str) and status in _REPORTED_STATUSES and type(logout) is bool:
            if not (logout and "status" in data):
                return {"status": status, "logout": logout}
    serializer = HeartbeatSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


class ManualPresenceSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """`null` clears the manual status: presence follows the sessions again."""

    status = choice_field(ReportedStatus.choices, "status", allow_null=True)


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
        current = self.context["request"].auth  # the token's session (users.api.authentication)
        return isinstance(current, PresenceSession) and current.pk == session.pk
