from django.contrib.auth import get_user_model
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt import serializers as jwt_serializers
from rest_framework_simplejwt.tokens import RefreshToken

from users.api.serializers.fields import RejectUnknownFieldsMixin
from users.api.serializers.presence import AccountSerializer, HeartbeatIntervalMixin
from users.selectors.sessions import session_of_token


class LoginSerializer(RejectUnknownFieldsMixin, jwt_serializers.TokenObtainSerializer):
    """Checks the credentials only (simplejwt's generic 401 for wrong, unknown or inactive
    accounts alike); tokens are issued by the login service."""


class LoginResponseSerializer(HeartbeatIntervalMixin, serializers.Serializer):
    access = serializers.CharField(help_text="Send as `Authorization: Bearer <access>`.")
    refresh = serializers.CharField(help_text="Single use: /token/refresh/ returns a new pair.")
    session_id = serializers.UUIDField(source="session.pk", help_text="This device's presence session.")
    user = AccountSerializer(source="session.user")


class LogoutSerializer(RejectUnknownFieldsMixin, serializers.Serializer):
    """`refresh`: that token's session ends. No body: the session of the access token used
    ends (the OffChat frontend). `refresh_token` is the frontend's older name for `refresh`."""

    refresh = serializers.CharField(required=False)
    refresh_token = serializers.CharField(required=False, help_text="Older clients' name for `refresh`.")

    def validate(self, attrs):
        if "refresh" in attrs and "refresh_token" in attrs:
            raise serializers.ValidationError({"refresh_token": ["Send `refresh` or `refresh_token`, not both."]})
        return {"refresh": attrs.get("refresh", attrs.get("refresh_token"))}


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


LOGGED_OUT = {"detail": "Logged out."}
