"""Presence over time: a user's own history, any user's for staff, and the users-per-status
timeline for staff. Thin views over users.selectors.history.

Privacy: history is read only by the user themselves (`me/history/`) and by staff (the
admin paths), so a user who hides their presence shows none of it to other users.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import generics
from rest_framework.permissions import IsAdminUser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from offchat_backend import shared_cache
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
    """Active users per status over time, from the per-minute counts; the step holding now
    ends with the live count, marked partial."""

    permission_classes = [IsAdminUser]
    schema = QuerySchema()
    serializer_class = serializers.TimelineSerializer

    def get(self, request):
        query = serializers.TimelineQuerySerializer(data=request.query_params, context={"now": self.presence_now})
        query.is_valid(raise_exception=True)
        start, end, step = (query.validated_data[name] for name in ("start", "end", "step"))
        answer = self.get_serializer({"start": start, "end": end, "step_seconds": int(step.total_seconds())}).data
        points = timeline_points_json(start=start, end=end, step=step, now=self.presence_now)
        # The points arrive as JSON text, a week's 10,080 of them mostly from the cache:
        # spliced in, not parsed and written again. This API renders JSON only.
        head = JSONRenderer().render(answer)
        return HttpResponse(head[:-1] + b',"points":' + points.encode() + b"}", content_type="application/json")


# The timeline's past hours never change: a minute's count is written during that minute
# (users.tasks.record_presence_counts), so an hour is settled a little after it ends.
CACHED_PIECE = timedelta(hours=1)
SETTLED_AFTER = timedelta(minutes=2)
CACHE_KEY = "presence-timeline:v2:{step}:{hour}"  # v2: points carry `partial`


def timeline_points_json(*, start: datetime, end: datetime, step: timedelta, now: datetime) -> str:
    """The points of [start, end) at `step` as a JSON array's text, the step holding now's
    minute last and partial (users.selectors.history.timeline). Whole settled hours come from
    the cache, and are put there when missing; the edges and the current hour are read from
    the database. A settled hour ended before now's minute: it is read without `now`, so it
    never holds the partial point. A week at one-minute steps read and written out whole cost
    ~100 ms (bench row 8). Steps longer than an hour are few: those are always read whole."""
    hours = _settled_hours(start=start, end=end, now=now) if CACHED_PIECE % step == timedelta(0) else []
    if not hours:
        return f"[{_points_text(start, end, step, now=now)}]"
    keys = [CACHE_KEY.format(step=int(step.total_seconds()), hour=int(hour.timestamp())) for hour in hours]
    cached = shared_cache.call("get_many", keys, purpose="timeline") or {}
    pieces, missing = [_points_text(start, hours[0], step, now=now)], {}
    for hour, key in zip(hours, keys, strict=True):
        if key not in cached:
            cached[key] = missing[key] = _points_text(hour, hour + CACHED_PIECE, step, now=None)
        pieces.append(cached[key])
    pieces.append(_points_text(hours[-1] + CACHED_PIECE, end, step, now=now))
    if missing:
        # Kept no longer than the counts themselves (users.tasks.prune_presence_history).
        timeout = (hours[0] + timedelta(days=settings.PRESENCE_HISTORY_DAYS) - now).total_seconds()
        shared_cache.call("set_many", missing, timeout=max(1, int(timeout)), purpose="timeline")
    return "[" + ",".join(piece for piece in pieces if piece) + "]"


def _settled_hours(*, start: datetime, end: datetime, now: datetime) -> list[datetime]:
    first = start + (-(start - serializers.STEP_GRID_ORIGIN) % CACHED_PIECE)
    last_end = min(end, now - SETTLED_AFTER)
    return [first + n * CACHED_PIECE for n in range(max(0, (last_end - first) // CACHED_PIECE))]


def _points_text(start: datetime, end: datetime, step: timedelta, *, now: datetime | None) -> str:
    if start >= end:
        return ""
    return serializers.timeline_points_text(history_selectors.timeline(start=start, end=end, step=step, now=now))
