import hashlib
import ipaddress
import json

from django.conf import settings
from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import generics, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.filters import SearchFilter
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle
from rest_framework.utils.encoders import JSONEncoder

from users import serializers
from users.authentication import SessionJWTAuthentication
from users.filters import AdminUserFilter, NullsLastOrderingFilter
from users.middleware import presence_written_by_view
from users.models import ReportedStatus
from users.selectors import accounts
from users.selectors import presence as presence_selectors
from users.services import auth, presence


class PresenceClockMixin:
    """Every presence in one response is computed at one moment."""

    def initial(self, request, *args, **kwargs):
        self.presence_now = timezone.now()
        super().initial(request, *args, **kwargs)

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "presence_now": self.presence_now}


class LoginView(PresenceClockMixin, generics.GenericAPIView):
    serializer_class = serializers.LoginSerializer
    permission_classes = [AllowAny]
    # A stale or broken Authorization header must not stop anyone from logging in.
    authentication_classes = []
    throttle_scope = "login"

    def get_authenticate_header(self, request):
        # Without a scheme to name, DRF would turn failed logins into 403s.
        return SessionJWTAuthentication().authenticate_header(request)

    def post(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = serializer.user
        tokens = auth.log_in(
            user=user, user_agent=request.META.get("HTTP_USER_AGENT", ""), ip_address=self._client_ip(request)
        )
        return Response(
            {
                "access": tokens.access,
                "refresh": tokens.refresh,
                "session_id": tokens.session.pk,
                "user": serializers.AccountSerializer(user, context=self.get_serializer_context()).data,
                "heartbeat_interval": settings.PRESENCE_HEARTBEAT_INTERVAL,
            }
        )

    @staticmethod
    def _client_ip(request):
        # The address throttling trusts (NUM_PROXIES), not a header a client can forge.
        try:
            return str(ipaddress.ip_address(BaseThrottle().get_ident(request)))
        except ValueError:
            return None


class LogoutView(generics.GenericAPIView):
    serializer_class = serializers.LogoutSerializer

    def post(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        auth.log_out(user=request.user, refresh_token=serializer.validated_data["refresh"])
        presence_written_by_view(request)
        return Response({"detail": "Logged out."})


class HeartbeatView(PresenceClockMixin, generics.GenericAPIView):
    serializer_class = serializers.HeartbeatSerializer

    def post(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        reported = serializer.validated_data["status"]
        presence.record_activity(
            user=request.user,
            session=request.user.presence_session,
            active=reported == ReportedStatus.ONLINE,
            reported_status=reported,
            at=self.presence_now,
        )
        presence_written_by_view(request)
        return Response(
            {
                **serializers.PresenceSerializer(request.user, context=self.get_serializer_context()).data,
                "heartbeat_interval": settings.PRESENCE_HEARTBEAT_INTERVAL,
            }
        )


class PresenceListMixin(PresenceClockMixin):
    """A list with a change feed and an ETag.

    `?since=<cursor>` answers only the users changed after the cursor (`results`), the ids
    that left the list (`removed`) and the next `cursor`. A full page carries an ETag over
    its rows and the `cursor` to follow from; `If-None-Match` with it gets 304.
    """

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        since = request.query_params.get("since")
        if since is not None:
            cursor = presence_selectors.parse_cursor(since, now=self.presence_now)
            changes = presence_selectors.changes_since(queryset=queryset, cursor=cursor, now=self.presence_now)
            return Response(
                {
                    "results": self.get_serializer(changes.users, many=True).data,
                    "removed": changes.removed_ids,
                    "cursor": str(changes.cursor),
                }
            )
        cursor = presence_selectors.current_cursor(now=self.presence_now)
        page = self.paginate_queryset(queryset)
        body = self.get_paginated_response(self.get_serializer(page, many=True).data).data
        etag = _etag_of(body)
        if etag in _etags_in(request.headers.get("If-None-Match", "")):
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
        # The cursor is left out of the ETag: it moves with the clock, the rows do not.
        return Response({**body, "cursor": str(cursor)}, headers={"ETag": etag})


def _etag_of(body) -> str:
    canonical = json.dumps(body, cls=JSONEncoder, sort_keys=True, separators=(",", ":"))
    return '"' + hashlib.blake2b(canonical.encode(), digest_size=16).hexdigest() + '"'


def _etags_in(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


class AllUsersView(PresenceListMixin, generics.ListAPIView):
    """Presence of every active user; staff also see emails and account flags."""

    def get_queryset(self):
        if self.request.user.is_staff:
            return accounts.users_for_admin().filter(is_active=True)
        return accounts.user_directory()

    def get_serializer_class(self):
        if self.request.user.is_staff:
            return serializers.AdminUserSerializer
        return serializers.DirectoryUserSerializer


class MeView(PresenceClockMixin, generics.RetrieveUpdateAPIView):
    """The signed-in user's account; PATCH changes names and `share_presence`."""

    serializer_class = serializers.AccountSerializer
    http_method_names = ["get", "patch", "options"]

    def get_object(self):
        return self.request.user

    def perform_update(self, serializer):
        share = serializer.validated_data.pop("share_presence", None)
        if share is not None:
            presence.set_share_presence(user=serializer.instance, share=share)
        serializer.save()


class MyPresenceView(PresenceClockMixin, generics.GenericAPIView):
    """GET: the user's own presence in full. PUT {"status": "away" | "online" | null}: a manual
    status that heartbeats do not override until it is cleared with null."""

    serializer_class = serializers.ManualPresenceSerializer

    def get(self, request):
        return Response(serializers.PresenceSerializer(request.user, context=self.get_serializer_context()).data)

    def put(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        presence.set_manual_status(user=request.user, status=serializer.validated_data["status"])
        return self.get(request)


class MySessionViewSet(mixins.ListModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """The user's own sessions; DELETE ends one (a forced logout of that device)."""

    serializer_class = serializers.SessionSerializer

    def get_queryset(self):
        return self.request.user.presence_sessions.all()

    def perform_destroy(self, session):
        # Ending the current session needs no word to the middleware: a revoked session's
        # activity writes nothing.
        auth.end_session(session=session)


class AdminUserViewSet(PresenceListMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    permission_classes = [IsAdminUser]
    serializer_class = serializers.AdminUserSerializer
    filter_backends = [DjangoFilterBackend, SearchFilter, NullsLastOrderingFilter]
    filterset_class = AdminUserFilter
    search_fields = ["username", "email", "first_name", "last_name"]
    ordering_fields = ["username", "last_seen", "date_joined", "online_status", "id"]
    ordering = ["username"]

    def get_queryset(self):
        if self.action == "online":
            return accounts.online_users_for_admin(now=self.presence_now)
        return accounts.users_for_admin()

    def get_serializer_class(self):
        if self.action == "online_status":
            return serializers.PresenceSerializer
        if self.action == "set_online_status":
            return serializers.SetOnlineStatusSerializer
        if self.action in ("sessions", "end_session"):
            return serializers.SessionSerializer
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
        presence.admin_set_status(user=user, status=serializer.validated_data["online_status"])
        # An admin who sets their own status must not be flipped back online by this request.
        presence_written_by_view(request)
        return Response(serializers.PresenceSerializer(user, context=self.get_serializer_context()).data)

    @action(detail=True)
    def sessions(self, request, pk=None):
        sessions = self.paginate_queryset(self.get_object().presence_sessions.all())
        return self.get_paginated_response(self.get_serializer(sessions, many=True).data)

    @action(detail=True, methods=["delete"], url_path=r"sessions/(?P<session_id>[^/.]+)")
    def end_session(self, request, pk=None, session_id=None):
        user = self.get_object()
        session = generics.get_object_or_404(user.presence_sessions.all(), pk=session_id)
        auth.end_session(session=session)
        return Response(status=status.HTTP_204_NO_CONTENT)
