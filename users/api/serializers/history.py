"""Presence over time: the query strings of the history endpoints (a range, a time zone, a
step) and their answers (users.selectors.history)."""

import json
import math
import re
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

from rest_framework import serializers

from users.api.serializers.fields import choice_field
from users.models import ReportedStatus

MAX_RANGE = timedelta(days=31)
MAX_POINTS = 10_080  # a week at one-minute steps
DEFAULT_DAYS = 7  # a user's history: today and the six days before
DEFAULT_TIMELINE = timedelta(hours=24)
STEPS = {"1m": 60, "5m": 5 * 60, "15m": 15 * 60, "1h": 60 * 60, "1d": 24 * 60 * 60}
# Moments outside these are refused, not computed: far years overflow Python's datetimes
# once shifted by an offset, and no presence was ever recorded there.
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(9000, 1, 1, tzinfo=UTC)
STEP_GRID_ORIGIN = datetime(1970, 1, 1, tzinfo=UTC)  # timeline steps are whole steps of UTC from here


@cache
def _time_zone_names() -> frozenset[str]:
    """The IANA names zoneinfo knows. A closed list, so that a name is never a file path."""
    return frozenset(available_timezones())


class MomentField(serializers.CharField):
    """An ISO 8601 datetime with its offset (`2026-03-01T09:30:00+01:00`, `...Z`), or a date
    (`2026-03-01`), which the serializer turns into a midnight: that day's as `from`, the next
    one as `to` (the whole day included). Returns an aware datetime or a date."""

    MAX_LENGTH = 64
    default_error_messages = {
        "too_long": f"At most {MAX_LENGTH} characters.",
        "invalid_moment": "Not an ISO 8601 date or datetime: use 2026-03-01 or 2026-03-01T09:30:00+01:00.",
        "naive": "A datetime needs its offset (Z or +01:00, say), or use a date.",
        "out_of_range": "Out of range: between 1970 and 9000.",
    }

    def __init__(self, **kwargs):
        # No max_length: its validator would run on the parsed value. Checked here instead.
        super().__init__(required=False, **kwargs)

    def to_internal_value(self, data):
        text = super().to_internal_value(data)
        if len(text) > self.MAX_LENGTH:
            self.fail("too_long")
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            moment = self._with_plus_restored(text)
        if moment.tzinfo is None or moment.utcoffset() is None:
            self.fail("naive")
        if not EARLIEST <= moment <= LATEST:
            self.fail("out_of_range")
        return moment.astimezone(UTC)

    def _with_plus_restored(self, text):
        """An unescaped `+` in a query string arrives as a space (`...09:30:00 01:00`): read it
        as the offset's sign it was."""
        match = _SPACED_OFFSET.match(text)
        try:
            return datetime.fromisoformat(f"{match[1]}+{match[2]}")
        except (TypeError, ValueError):
            self.fail("invalid_moment")


_SPACED_OFFSET = re.compile(r"^(.+\d) (\d\d(?::?\d\d)?)$")


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)


def _local_span(start: datetime, end: datetime, tz: ZoneInfo) -> timedelta:
    """end - start on `tz`'s wall clock: a local day is one day, 23 or 25 hours long on a DST
    change, so that a range of whole local days is as long as their count."""
    return end.astimezone(tz).replace(tzinfo=None) - start.astimezone(tz).replace(tzinfo=None)


class RangeQuerySerializer(serializers.Serializer):
    """`from` and `to` (a Python keyword: the fields are built in get_fields). Validated data:
    `start`, `end` (aware, UTC), plus what subclasses add. The context carries `now`.

    A date as `from` starts at that day's midnight in the time zone; a date as `to` ends at
    the next one, so that `from=D&to=D` is the whole of day D, as date pickers mean it. A
    datetime is that moment, `to` excluded."""

    FROM_HELP = ""
    TO_HELP = "ISO 8601 datetime with offset (excluded), or a date (that whole day). Default: now."

    def get_fields(self):
        return {
            "from": MomentField(help_text=self.FROM_HELP),
            "to": MomentField(help_text=self.TO_HELP),
            **super().get_fields(),
        }

    def time_zone(self, attrs) -> ZoneInfo:
        return ZoneInfo("UTC")

    def default_start(self, *, end: datetime, tz: ZoneInfo) -> datetime:
        raise NotImplementedError

    def validate(self, attrs):
        tz = self.time_zone(attrs)
        end = self._resolve(attrs.get("to"), tz, "to") or self.context["now"]
        start = self._resolve(attrs.get("from"), tz, "from") or self.default_start(end=end, tz=tz)
        if start >= end:
            raise serializers.ValidationError({"from": ["Must be before `to` (a date as `to` is its whole day)."]})
        span = _local_span(start, end, tz)
        if span > MAX_RANGE:
            length = f"{span.days} days" if span % timedelta(days=1) == timedelta(0) else f"over {span.days} days"
            raise serializers.ValidationError(
                {
                    "from": [
                        f"The range from `from` to `to` is at most {MAX_RANGE.days} days, a date as `to` "
                        f"counting as its whole day: this one is {length}."
                    ]
                }
            )
        return {**attrs, "start": start, "end": end, "tz": tz}

    @staticmethod
    def _resolve(moment, tz: ZoneInfo, name: str) -> datetime | None:
        if moment is None or isinstance(moment, datetime):
            return moment
        if not EARLIEST.date() <= moment <= LATEST.date():
            raise serializers.ValidationError({name: [MomentField.default_error_messages["out_of_range"]]})
        return _midnight(moment + timedelta(days=1) if name == "to" else moment, tz)


class HistoryQuerySerializer(RangeQuerySerializer):
    """`?from=&to=&tz=` of a user's history."""

    FROM_HELP = (
        "ISO 8601 datetime with offset, or a date: from midnight of that day in `tz`. Default: midnight in `tz` "
        "six days before the day of `to` (seven local days). At most 31 days before `to`."
    )
    TO_HELP = (
        "ISO 8601 datetime with offset (excluded), or a date: that whole day in `tz`, up to the next midnight "
        "(`from=2026-12-04&to=2026-12-04` is that day). Default: now. Nothing after now is counted."
    )

    tz = serializers.CharField(
        required=False, default="UTC", max_length=64, help_text="An IANA time zone, e.g. Europe/Berlin."
    )

    def validate_tz(self, name):
        if name not in _time_zone_names():
            raise serializers.ValidationError(f'"{name}" is not an IANA time zone name (e.g. Europe/Berlin, UTC).')
        return name

    def time_zone(self, attrs) -> ZoneInfo:
        return ZoneInfo(attrs.get("tz", "UTC"))

    def default_start(self, *, end, tz):
        last_day = (end - timedelta(microseconds=1)).astimezone(tz).date()
        return _midnight(last_day - timedelta(days=DEFAULT_DAYS - 1), tz)


class TimelineQuerySerializer(RangeQuerySerializer):
    """`?from=&to=&step=` of the users-per-status timeline. Validated data adds `step` as a
    timedelta."""

    FROM_HELP = (
        "ISO 8601 datetime with offset, or a date (from its midnight, UTC). Default: 24 hours before `to`. "
        "At most 31 days before `to`. Moved back to the start of its step: steps are whole minutes, hours "
        "or days of UTC, and the answer's `from` says where the first step starts."
    )
    TO_HELP = (
        "ISO 8601 datetime with offset (excluded), or a date: that whole day of UTC, up to the next midnight. "
        "Default: now."
    )

    step = choice_field(
        [(name, name) for name in STEPS],
        "step",
        required=False,
        default="1m",
        help_text=f"The width of a point. At most {MAX_POINTS:,} points: (to - from) / step.",
    )

    def default_start(self, *, end, tz):
        return end - DEFAULT_TIMELINE

    def validate(self, attrs):
        attrs = super().validate(attrs)
        step = timedelta(seconds=STEPS[attrs["step"]])
        # Steps lie on one grid, whole minutes, hours or days of UTC: a point means the same
        # minutes whoever asks, and past hours can be cached (users.api.history).
        attrs["start"] = STEP_GRID_ORIGIN + (attrs["start"] - STEP_GRID_ORIGIN) // step * step
        points = math.ceil((attrs["end"] - attrs["start"]) / step)
        if points > MAX_POINTS:
            raise serializers.ValidationError(
                {"step": [f"{points:,} points; at most {MAX_POINTS:,}: take a longer step or a shorter range."]}
            )
        return {**attrs, "step": step}


# --- Answers ---------------------------------------------------------------------------
class LocalDateTimeField(serializers.DateTimeField):
    """A moment written with the offset of the answer's time zone (`context["tz"]`), `Z` for
    UTC."""

    def to_representation(self, value):
        if value is None:
            return None
        text = value.astimezone(self.context.get("tz") or UTC).isoformat()
        return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


class FloorSecondsField(serializers.IntegerField):
    """Seconds as a whole number, rounded down."""

    def to_representation(self, value):
        return math.floor(value)


class IntervalSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=ReportedStatus.choices)
    started_at = LocalDateTimeField()
    ended_at = LocalDateTimeField(allow_null=True, help_text="null: still so.")


class DaySerializer(serializers.Serializer):
    date = serializers.DateField(help_text="A local day of `tz`.")
    online_seconds = FloorSecondsField(help_text="Seconds shown online that day, rounded down.")
    away_seconds = FloorSecondsField(help_text="Seconds shown away that day, rounded down.")
    first_seen = LocalDateTimeField(allow_null=True, help_text="Start of the day's first interval; null: none.")
    last_seen = LocalDateTimeField(allow_null=True, help_text="End of the day's last interval; null: none.")


class UserHistorySerializer(serializers.Serializer):
    """A user's presence over [from, to): the intervals (clipped to the range) and a total per
    local day. Every moment is written with `tz`'s offset."""

    tz = serializers.CharField()
    intervals = IntervalSerializer(many=True)
    days = DaySerializer(many=True)

    def get_fields(self):
        fields = super().get_fields()
        return {
            "tz": fields.pop("tz"),
            "from": LocalDateTimeField(source="start"),
            "to": LocalDateTimeField(source="end"),
            **fields,
        }


class PointSerializer(serializers.Serializer):
    at = serializers.DateTimeField(help_text="The start of the step.")
    online = serializers.IntegerField()
    away = serializers.IntegerField()
    offline = serializers.IntegerField()
    partial = serializers.BooleanField(
        help_text="True for the last point when the range holds the current minute: its step is not over, and "
        "the current minute's count in it is the live one, read with the request. False for every other point."
    )


def timeline_points(points) -> list[dict]:
    """PointSerializer(points, many=True).data, built by hand: a week at one-minute steps is
    10,080 points, and DRF's per-field work for them cost more than the query (bench row 8).
    Times as DRF writes them in UTC (ISO 8601, `Z`). A test keeps the two identical."""
    return [
        {"at": _utc_text(at), "online": online, "away": away, "offline": offline, "partial": partial}
        for at, online, away, offline, partial in points
    ]


def timeline_points_text(points) -> str:
    """timeline_points as the text of JSON array items, without the brackets: pieces of the
    array that users.api.history caches and joins."""
    return json.dumps(timeline_points(points), separators=(",", ":"))[1:-1]


def _utc_text(moment: datetime) -> str:
    if moment.utcoffset():
        moment = moment.astimezone(UTC)
    return moment.isoformat().replace("+00:00", "Z")


class TimelineSerializer(serializers.Serializer):
    """Active users per status shown, one point per step (the mean of the per-minute counts in
    it, rounded); a step with no count (no beat ran) has no point. When the range holds the
    current minute, the last point is its step so far with the live count, `partial`."""

    step_seconds = serializers.IntegerField()
    points = PointSerializer(many=True, required=False, help_text="Built by timeline_points, as this says.")

    def get_fields(self):
        return {
            "from": LocalDateTimeField(source="start"),
            "to": LocalDateTimeField(source="end"),
            **super().get_fields(),
        }
