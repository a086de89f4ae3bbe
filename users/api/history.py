"""Presence over time: a user's own history, any user's for staff, and the users-per-status
timeline for staff. Thin views over users.selectors.history.

Privacy: history is read only by the user themselves (`me/history/`) and by staff (the
admin paths), so a user who hides their presence shows none of it to other users.
"""

from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response

from offchat_backend.openapi import AutoSchema
from users.api.clock import PresenceClockMixin
from users.api.serializers import history as serializers
from users.selectors import accounts
from users.selectors import history as history_selectors


class QuerySchema(AutoSchema):
    """These GETs validate their query string: their 400 is documented too."""

    def validates_query(self) -> bool:
        return True


class _UserHistoryMixin(PresenceClockMixin):
    schema = QuerySchema()
    serializer_class = serializers.UserHistorySerializer

    def history_of(self, user) -> Response:
        query = serializers.HistoryQuerySerializer(data=self.request.query_params, context={"now": self.presence_now})
        query.is_valid(raise_exception=True)
        start, end, tz = (query.validated_data[name] for name in ("start", "end", "tz"))
        history = history_selectors.user_history(user=user, start=start, end=end, tz=tz, now=self.presence_now)
        answer = {"tz": str(tz), "start": start, "end": end, "intervals": history.intervals, "days": history.days}
        return Response(self.get_serializer(answer, context={**self.get_serializer_context(), "tz": tz}).data)


@extend_schema(parameters=[serializers.HistoryQuerySerializer], responses=serializers.UserHistorySerializer)
class MyHistoryView(_UserHistoryMixin, generics.GenericAPIView):
    """The signed-in user's presence over a range: intervals and per-day totals in `tz`."""

    def get(self, request):
        return self.history_of(request.user)


@extend_schema(parameters=[serializers.HistoryQuerySerializer], responses=serializers.UserHistorySerializer)
class AdminUserHistoryView(_UserHistoryMixin, generics.GenericAPIView):
    """Any user's presence over a range, hidden presence included (staff see the truth)."""

    permission_classes = [IsAdminUser]

    def get_queryset(self):
        return accounts.users_for_admin()

    def get(self, request, pk):
        return self.history_of(self.get_object())


@extend_schema(parameters=[serializers.TimelineQuerySerializer], responses=serializers.TimelineSerializer)
class PresenceTimelineView(PresenceClockMixin, generics.GenericAPIView):
    """Active users per status over time, from the sweeps' per-minute counts."""

    permission_classes = [IsAdminUser]
    schema = QuerySchema()
    serializer_class = serializers.TimelineSerializer

    def get(self, request):
        query = serializers.TimelineQuerySerializer(data=request.query_params, context={"now": self.presence_now})
        query.is_valid(raise_exception=True)
        start, end, step = (query.validated_data[name] for name in ("start", "end", "step"))
        points = history_selectors.timeline(start=start, end=end, step=step)
        answer = self.get_serializer({"start": start, "end": end, "step_seconds": int(step.total_seconds())}).data
        return Response({**answer, "points": serializers.timeline_points(points)})
