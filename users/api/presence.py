"""The signed-in user's own presence: heartbeats, account, manual status, sessions."""

from django.db import transaction
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema
from rest_framework import generics, mixins, viewsets
from rest_framework.response import Response

from users.api.clock import PresenceClockMixin
from users.api.serializers import presence as serializers
from users.api.serializers.auth import LOGGED_OUT, DetailSerializer
from users.api.throttling import HeartbeatRateThrottle, PasswordChangeThrottle
from users.models import PresenceSession, ReportedStatus
from users.ops.metrics import HEARTBEATS
from users.services import auth, presence


@extend_schema(
    responses=PolymorphicProxySerializer(
        component_name="HeartbeatAnswer",
        serializers=[serializers.HeartbeatResponseSerializer, DetailSerializer],
        resource_type_field_name=None,
    )
)
class HeartbeatView(PresenceClockMixin, generics.GenericAPIView):
    """Every `heartbeat_interval` seconds while the app is open; `{"status": "away"}` when the
    user is idle or the tab is hidden. Answers the user's presence as now computed.
    `{"logout": true}` (a closing page's beacon) ends the session instead: `{detail}`."""

    serializer_class = serializers.HeartbeatSerializer
    throttle_scope = "heartbeat"
    records_own_presence = True  # users.api.middleware

    def get_throttles(self):
        # Its own per-user limit only, counted in batches: the general per-user one would cost
        # another Redis round trip on the busiest endpoint, to enforce a looser limit
        # (bench/REPORT.md). None where throttling is off altogether.
        return [HeartbeatRateThrottle()] if self.throttle_classes else []

    def post(self, request):
        heartbeat = serializers.read_heartbeat(request.data)  # serializer_class, read lean
        if heartbeat["logout"]:
            auth.log_out_session(session=request.auth)
            return Response(LOGGED_OUT)
        reported = heartbeat["status"]
        presence.record_activity(
            user=request.user,
            session=request.auth,
            active=reported == ReportedStatus.ONLINE,
            reported_status=reported,
            at=self.presence_now,
            may_defer=True,  # the answer below is computed from request.user as updated
        )
        HEARTBEATS.labels(status=reported).inc()
        return Response(serializers.heartbeat_answer(request.user, now=self.presence_now))


class MeView(PresenceClockMixin, generics.RetrieveUpdateAPIView):
    """The signed-in user's account; PATCH (or PUT) changes names and `share_presence`, and the
    password with `current_password` and `new_password`: every other session then ends."""

    serializer_class = serializers.AccountSerializer
    http_method_names = ["get", "put", "patch", "options"]

    def get_object(self):
        return self.request.user

    def get_throttles(self):
        throttles = super().get_throttles()
        # Per user on top of the general limits, unless throttling is off altogether (as login's).
        return [*throttles, PasswordChangeThrottle()] if throttles else throttles

    def update(self, request, *args, **kwargs):
        # PUT as the OffChat frontend sends it: only the fields it names change, as with PATCH.
        return super().update(request, *args, **{**kwargs, "partial": True})

    def perform_update(self, serializer):
        data = serializer.validated_data
        password_change = {name: data.pop(name) for name in ("current_password", "new_password") if name in data}
        share = data.pop("share_presence", None)
        # All or nothing: a refused password rolls the names back. The password is written
        # last, so that the account's save (every field but presence) cannot write an old hash.
        with transaction.atomic():
            if share is not None:
                presence.set_share_presence(user=serializer.instance, share=share)
            serializer.save()
            if password_change:
                auth.change_password(session=self.request.auth, **password_change)


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
