import hashlib
import ipaddress
import json
import logging

from django.utils import timezone
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import AuthenticationFailed, ValidationError
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.response import Response
from rest_framework.throttling import BaseThrottle, ScopedRateThrottle
from rest_framework.utils.encoders import JSONEncoder
from rest_framework_simplejwt import views as jwt_views
from rest_framework_simplejwt.exceptions import TokenError

from offchat_backend.log_events import log_event
from offchat_backend.openapi import error
from users import serializers
from users.authentication import SessionJWTAuthentication
from users.exceptions import RefreshTokenNotOwnedError
from users.filters import AdminUserFilter, BoundedSearchFilter, NullsLastOrderingFilter
from users.metrics import HEARTBEATS, LOGINS
from users.middleware import presence_written_by_view
from users.models import PresenceSession, ReportedStatus
from users.pagination import UserKeysetPagination
from users.selectors import accounts
from users.selectors import presence as presence_selectors
from users.selectors.health import UNAVAILABLE, system_health
from users.services import auth, presence
from users.throttling import LoginUsernameThrottle

logger = logging.getLogger(__name__)


class PresenceClockMixin:
    """Every presence in one response is computed at one moment."""

    def initial(self, request, *args, **kwargs):
        self.presence_now = timezone.now()
        super().initial(request, *args, **kwargs)

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "presence_now": self.presence_now}


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
    """Blacklists the refresh token and ends its session; the user's other devices stay."""

    serializer_class = serializers.LogoutSerializer

    def post(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            auth.log_out(user=request.user, refresh_token=serializer.validated_data["refresh"])
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
        presence_written_by_view(request)
        return Response({"detail": "Logged out."})


@extend_schema(responses=serializers.HeartbeatResponseSerializer)
class HeartbeatView(PresenceClockMixin, generics.GenericAPIView):
    """Every `heartbeat_interval` seconds while the app is open; `{"status": "away"}` when the
    user is idle or the tab is hidden. Answers the user's presence as now computed."""

    serializer_class = serializers.HeartbeatSerializer
    throttle_scope = "heartbeat"

    def get_throttles(self):
        # Its own per-user limit only: the general per-user one would cost two more Redis round
        # trips on the busiest endpoint, to enforce a looser limit (bench/REPORT.md).
        return [throttle for throttle in super().get_throttles() if isinstance(throttle, ScopedRateThrottle)]

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
        HEARTBEATS.labels(status=reported).inc()
        return Response(serializers.heartbeat_answer(request.user, now=self.presence_now))


class PresenceListMixin(PresenceClockMixin):
    """A list with a change feed and an ETag.

    `?since=<cursor>` answers only the users changed after the cursor (`results`), the ids
    that left the list (`removed`) and the next `cursor`. A full page carries an ETag over
    its rows and the `cursor` to follow from; `If-None-Match` with it gets 304.
    """

    # The actions that answer through list() (for the OpenAPI schema).
    feed_actions = frozenset({"list", "online"})

    @property
    def paginator(self):
        """Page numbers by default; `?paging=keyset` for deep pages of large lists."""
        if not hasattr(self, "_paginator"):
            paging = self.request.query_params.get("paging")
            if paging not in (None, "keyset"):
                raise ValidationError({"paging": ['The only paging is "keyset"; leave it out for numbered pages.']})
            keyset = paging == "keyset"
            if keyset and getattr(self, "action", "list") in self.feed_actions:
                self._paginator = UserKeysetPagination()
            else:
                self._paginator = self.pagination_class()
        return self._paginator

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

    def get_object(self):
        # Also what DRF's OPTIONS metadata asks for before describing PUT.
        return self.request.user

    @extend_schema(responses=serializers.PresenceSerializer)
    def get(self, request):
        return Response(serializers.PresenceSerializer(self.get_object(), context=self.get_serializer_context()).data)

    @extend_schema(responses=serializers.PresenceSerializer)
    def put(self, request):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        presence.set_manual_status(user=request.user, status=serializer.validated_data["status"])
        return self.get(request)


class MySessionViewSet(mixins.ListModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """The user's own sessions; DELETE ends one (a forced logout of that device)."""

    serializer_class = serializers.SessionSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular's schema pass: no user
            return PresenceSession.objects.none()
        return self.request.user.presence_sessions.all()

    def perform_destroy(self, session):
        # Ending the current session needs no word to the middleware: a revoked session's
        # activity writes nothing.
        auth.end_session(session=session)


class AdminUserViewSet(PresenceListMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    permission_classes = [IsAdminUser]
    serializer_class = serializers.AdminUserSerializer
    filter_backends = [DjangoFilterBackend, BoundedSearchFilter, NullsLastOrderingFilter]
    filterset_class = AdminUserFilter
    search_fields = ["username", "email", "first_name", "last_name"]
    ordering_fields = ["username", "last_seen", "date_joined", "online_status", "id"]
    ordering = ["username"]

    def get_queryset(self):
        if self.action == "online" and not getattr(self, "swagger_fake_view", False):  # the schema pass has no clock
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

    @extend_schema(responses=serializers.AdminUserSerializer(many=True))
    @action(detail=False)
    def online(self, request):
        return self.list(request)

    @extend_schema(responses=serializers.PresenceSummarySerializer)
    @action(detail=False)
    def summary(self, request):
        """Active users per status, for the dashboard's counters."""
        counts = presence_selectors.status_counts(now=self.presence_now)
        return Response(serializers.PresenceSummarySerializer(counts).data)

    @action(detail=True, url_path="online-status")
    def online_status(self, request, pk=None):
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(responses=serializers.PresenceSerializer)
    @action(detail=True, methods=["post"], url_path="set-online-status")
    def set_online_status(self, request, pk=None):
        user = self.get_object()
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        presence.admin_set_status(user=user, status=serializer.validated_data["online_status"])
        # An admin who sets their own status must not be flipped back online by this request.
        presence_written_by_view(request)
        return Response(serializers.PresenceSerializer(user, context=self.get_serializer_context()).data)

    @extend_schema(responses=serializers.SessionSerializer(many=True))
    @action(detail=True)
    def sessions(self, request, pk=None):
        sessions = self.paginate_queryset(self.get_object().presence_sessions.all())
        return self.get_paginated_response(self.get_serializer(sessions, many=True).data)

    @extend_schema(parameters=[OpenApiParameter("session_id", OpenApiTypes.UUID, OpenApiParameter.PATH)])
    @action(detail=True, methods=["delete"], url_path=r"sessions/(?P<session_id>[^/.]+)")
    def end_session(self, request, pk=None, session_id=None):
        user = self.get_object()
        session = generics.get_object_or_404(user.presence_sessions.all(), pk=session_id)
        auth.end_session(session=session)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(
    responses={
        200: OpenApiResponse(serializers.HealthSerializer, description="ok, or degraded (cache or broker down)."),
        503: OpenApiResponse(
            serializers.HealthSerializer, description="The database is unreachable or the sweeper stalled."
        ),
    },
)
class HealthView(generics.GenericAPIView):
    """Database, cache, broker and sweeper liveness. No authentication and nothing secret, so
    load balancers and uptime checks can call it; not throttled, for the same reason."""

    permission_classes = [AllowAny]
    authentication_classes = []
    throttle_classes = []
    serializer_class = serializers.HealthSerializer

    def get(self, request):
        health = system_health()
        code = status.HTTP_503_SERVICE_UNAVAILABLE if health.status == UNAVAILABLE else status.HTTP_200_OK
        return Response(self.get_serializer(health.as_dict()).data, status=code, headers={"Cache-Control": "no-store"})


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
