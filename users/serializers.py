from django.contrib.auth import get_user_model
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt import serializers as jwt_serializers

from users.models import OnlineStatus, User

ALLOWED_STATUSES = ", ".join(OnlineStatus.values)


class DirectoryUserSerializer(serializers.ModelSerializer):
    """What any signed-in user may see of another: no email, no staff flags."""

    class Meta:
        model = User
        fields = ["id", "username", "first_name", "last_name", "online_status", "last_seen"]
        read_only_fields = fields


class AdminUserSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = DirectoryUserSerializer.Meta.fields + [
            "is_online",
            "email",
            "is_staff",
            "is_active",
            "date_joined",
        ]
        read_only_fields = fields


class AccountSerializer(serializers.ModelSerializer):
    """The signed-in user's own account, returned at login."""

    class Meta:
        model = User
        fields = DirectoryUserSerializer.Meta.fields + ["email", "is_staff"]
        read_only_fields = fields


class PresenceSerializer(serializers.ModelSerializer):
    class Meta:
        model = User
        fields = ["id", "username", "online_status", "last_seen", "is_online"]
        read_only_fields = fields


class SetOnlineStatusSerializer(serializers.Serializer):
    online_status = serializers.ChoiceField(
        choices=OnlineStatus.choices,
        error_messages={
            "invalid_choice": f'"{{input}}" is not a valid online_status. Allowed values: {ALLOWED_STATUSES}.'
        },
    )


class LoginSerializer(jwt_serializers.TokenObtainSerializer):
    """Checks the credentials only (simplejwt's generic 401 for wrong, unknown or inactive
    accounts alike); tokens are issued by the login service."""


class LogoutSerializer(serializers.Serializer):
    refresh = serializers.CharField()


class TokenRefreshSerializer(jwt_serializers.TokenRefreshSerializer):
    """simplejwt's refresh, plus a 401 (not a 500) for a token whose user was deleted."""

    def validate(self, attrs):
        try:
            return super().validate(attrs)
        except get_user_model().DoesNotExist as missing:
            raise AuthenticationFailed(self.error_messages["no_active_account"], "no_active_account") from missing
