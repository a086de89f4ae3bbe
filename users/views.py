from django.conf import settings
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import generics, mixins, viewsets
from rest_framework.decorators import action
from rest_framework.filters import SearchFilter
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.response import Response
from rest_framework_simplejwt.authentication import JWTAuthentication

from users import selectors, serializers
from users.filters import AdminUserFilter, NullsLastOrderingFilter
from users.middleware import presence_written_by_view
from users.services import auth, presence


class LoginView(generics.GenericAPIView):
    serializer_class = serializers.LoginSerializer
    permission_classes = [AllowAny]
    # A stale or broken Authorization header must not stop anyone from logging in.
    authentication_classes = []
    throttle_scope = "login"

    def get_authenticate_header(self, request):
        # Without a scheme to name, DRF would turn failed logins into 403s.
        return JWTAuthentication().authenticate_header(request)

    def post(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = serializer.user
        tokens = auth.log_in(user=user)
        return Response(
            {
                "access": tokens.access,
                "refresh": tokens.refresh,
                "user": serializers.AccountSerializer(user).data,
                "heartbeat_interval": settings.PRESENCE_HEARTBEAT_INTERVAL,
            }
        )


class LogoutView(generics.GenericAPIView):
    serializer_class = serializers.LogoutSerializer

    def post(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        auth.log_out(user=request.user, refresh_token=serializer.validated_data["refresh"])
        presence_written_by_view(request)
        return Response({"detail": "Logged out."})


class HeartbeatView(generics.GenericAPIView):
    serializer_class = serializers.PresenceSerializer

    def post(self, request):
        presence.record_activity(user=request.user)
        presence_written_by_view(request)
        return Response(
            {
                **self.get_serializer(request.user).data,
                "heartbeat_interval": settings.PRESENCE_HEARTBEAT_INTERVAL,
            }
        )


class AllUsersView(generics.ListAPIView):
    """Presence of every active user; staff also see emails and account flags."""

    def get_queryset(self):
        if self.request.user.is_staff:
            return selectors.users_for_admin().filter(is_active=True)
        return selectors.user_directory()

    def get_serializer_class(self):
        if self.request.user.is_staff:
            return serializers.AdminUserSerializer
        return serializers.DirectoryUserSerializer


class AdminUserViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    permission_classes = [IsAdminUser]
    serializer_class = serializers.AdminUserSerializer
    filter_backends = [DjangoFilterBackend, SearchFilter, NullsLastOrderingFilter]
    filterset_class = AdminUserFilter
    search_fields = ["username", "email", "first_name", "last_name"]
    ordering_fields = ["username", "last_seen", "date_joined", "online_status", "id"]
    ordering = ["username"]

    def get_queryset(self):
        if self.action == "online":
            return selectors.online_users_for_admin()
        return selectors.users_for_admin()

    def get_serializer_class(self):
        if self.action == "online_status":
            return serializers.PresenceSerializer
        if self.action == "set_online_status":
            return serializers.SetOnlineStatusSerializer
        return serializers.AdminUserSerializer

    @action(detail=False)
    def online(self, request):
        return self.list(request)

    @action(detail=True, url_path="online-status")
    def online_status(self, request, pk=None):
        return Response(self.get_serializer(self.get_object()).data)

    @action(detail=True, methods=["post"], url_path="set-online-status")
    def set_online_status(self, request, pk=None):
        user = self.get_object()
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        presence.set_status(user=user, status=serializer.validated_data["online_status"])
        # An admin who sets their own status must not be flipped back online by this request.
        presence_written_by_view(request)
        return Response(serializers.PresenceSerializer(user).data)
