"""Login, token refresh and logout."""

import ipaddress
import logging

from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework_simplejwt import views as jwt_views
from rest_framework_simplejwt.exceptions import TokenError

from offchat_backend.log_events import log_event
from offchat_backend.openapi import error
from users.api.authentication import SessionJWTAuthentication
from users.api.clock import PresenceClockMixin
from users.api.serializers import auth as serializers
from users.api.throttling import LoginUsernameThrottle
from users.exceptions import RefreshTokenNotOwnedError
from users.ops.metrics import LOGINS
from users.services import auth

logger = logging.getLogger(__name__)


@extend_schema(
    responses={
        200: serializers.LoginResponseSerializer,
        401: error("401", "Wrong username or password, or a deactivated account: one answer for all."),
    },
)
class LoginView(PresenceClockMixin, generics.GenericAPIView):
    """Username and password for a JWT pair and a new presence session: the user is online."""

    serializer_class = serializers.LoginSerializer
    permission_classes = [AllowAny]
    # A stale or broken Authorization header must not stop anyone from logging in.
    authentication_classes = []
    throttle_scope = "login"

    def get_throttles(self):
        throttles = super().get_throttles()
        # Per username on top of the per-address limits, unless throttling is off altogether.
        return [*throttles, LoginUsernameThrottle()] if throttles else throttles

    def get_authenticate_header(self, request):
        # Without a scheme to name, DRF would turn failed logins into 403s.
        return SessionJWTAuthentication().authenticate_header(request)

    def post(self, request):
        serializer = self.get_serializer(data=request.data)
        try:
            serializer.is_valid(raise_exception=True)
        except AuthenticationFailed:
            # Only the username: never the password, not even a wrong one.
            username = str(serializer.initial_data.get(serializer.username_field, ""))[:150]
            log_event(logger, "login", level=logging.WARNING, outcome="failure", username=username)
            LOGINS.labels(outcome="failure").inc()
            raise
        user = serializer.user
        LOGINS.labels(outcome="success").inc()
        tokens = auth.log_in(
            user=user, user_agent=request.META.get("HTTP_USER_AGENT", ""), ip_address=self._client_ip(request)
        )
        return Response(serializers.LoginResponseSerializer(tokens, context=self.get_serializer_context()).data)

    @staticmethod
    def _client_ip(request):
        # The address throttling trusts (NUM_PROXIES), not a header a client can forge.
        try:
            return str(ipaddress.ip_address(BaseThrottle().get_ident(request)))
        except ValueError:
            return None


@extend_schema(
    responses={
        200: serializers.DetailSerializer,
        401: error("401", "Invalid token, or the refresh token is invalid, expired or already used."),
        403: error("403", "The refresh token belongs to another user."),
    },
)
class LogoutView(generics.GenericAPIView):
    """Blacklists the refresh token and ends its session; the user's other devices stay.
    With no body, the session of the access token used ends, and its refresh tokens are
    blacklisted."""

    serializer_class = serializers.LogoutSerializer
    records_own_presence = True  # users.api.middleware

    def post(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        refresh_token = serializer.validated_data["refresh"]
        if refresh_token is None:
            auth.log_out_session(session=request.auth)
            return Response(serializers.LOGGED_OUT)
        try:
            auth.log_out(user=request.user, refresh_token=refresh_token)
        except (TokenError, RefreshTokenNotOwnedError) as refused:
            log_event(
                logger,
                "logout",
                level=logging.WARNING,
                outcome="failure",
                user_id=request.user.pk,
                reason=type(refused).__name__,
            )
            raise
        return Response(serializers.LOGGED_OUT)


class TokenRefreshView(jwt_views.TokenRefreshView):
    """A new access token and a new refresh token; the old refresh token is used up."""

    @extend_schema(
        responses={
            200: jwt_views.TokenRefreshView.serializer_class,
            401: error("401", "Invalid, expired, used or revoked refresh token."),
        }
    )
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)
