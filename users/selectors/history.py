"""Presence over time, read side: a user's intervals and per-day totals in a time zone, and
users per status over time (users.services.history writes both)."""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from django.db.models import Q

from offchat_backend import shared_cache
from users.models import OnlineStatus, PresenceCount, PresenceInterval, User
from users.presence_rules import inactivity_timeout
from users.selectors.presence import status_counts


@dataclass(frozen=True)
class Interval:
    status: str
    started_at: datetime
    ended_at: datetime | None  # None: still so


@dataclass
class Day:
    date: date
    online_seconds: float = 0.0
    away_seconds: float = 0.0
    first_seen: datetime | None = None
    last_seen: datetime | None = None


@dataclass(frozen=True)
class History:
    intervals: list[Interval]
    days: list[Day] = field(default_factory=list)


def user_history(*, user: User, start: datetime, end: datetime, tz: ZoneInfo, now: datetime) -> History:
    """`user`'s intervals overlapping [start, end), clipped to it and to now, and a total per
    local day of `tz` from start's day to the day of min(end, now). An open interval runs until
    now, or until the user's connection timed out if the sweep has not closed it yet; it is
    returned with `ended_at` None (still so) only when the range reaches now."""
    # One time zone for all arithmetic: Python subtracts two datetimes that share a tzinfo
    # as wall-clock times, which is an hour off across a DST change.
    start, end, now = (moment.astimezone(UTC) for moment in (start, end, now))
    until = min(end, now)
    rows = PresenceInterval.objects.filter(user=user, started_at__lt=until).filter(
        Q(ended_at__isnull=True) | Q(ended_at__gt=start)
    )
    open_until = min(now, user.last_seen + inactivity_timeout()) if user.last_seen else now
    intervals = []
    for row in rows.order_by("started_at"):
        row_end = row.ended_at or max(row.started_at, open_until)
        still = row.ended_at is None and row_end >= now and end >= now
        clipped_start, clipped_end = max(row.started_at, start), min(row_end, until)
        if clipped_end > clipped_start:
            intervals.append(Interval(row.status, clipped_start, None if still else clipped_end))
    return History(intervals=intervals, days=_days(intervals, start=start, end=until, tz=tz))


def _days(intervals: list[Interval], *, start: datetime, end: datetime, tz: ZoneInfo) -> list[Day]:
    """Totals per local day of `tz`; an interval still open (ended_at None) counts until `end`.
    Summed as timedeltas (exact), turned into seconds once."""
    first, last = start.astimezone(tz).date(), max(start, end - timedelta(microseconds=1)).astimezone(tz).date()
    days = {first + timedelta(days=n): Day(first + timedelta(days=n)) for n in range((last - first).days + 1)}
    totals = {day: {OnlineStatus.ONLINE: timedelta(0), OnlineStatus.AWAY: timedelta(0)} for day in days}
    for interval in intervals:
        piece_start, interval_end = interval.started_at, interval.ended_at or end
        while piece_start < interval_end:
            local_day = piece_start.astimezone(tz).date()
            # The next local midnight as an instant (UTC): 23 or 25 hours away on a DST day.
            next_midnight = datetime.combine(local_day + timedelta(days=1), time.min, tzinfo=tz).astimezone(UTC)
            piece_end = min(interval_end, next_midnight)
            day = days.get(local_day)
            if day is not None:
                totals[local_day][interval.status] += piece_end - piece_start
                day.first_seen = min(filter(None, [day.first_seen, piece_start]))
                day.last_seen = max(filter(None, [day.last_seen, piece_end]))
            piece_start = piece_end
    for local_day, day in days.items():
        day.online_seconds = totals[local_day][OnlineStatus.ONLINE].total_seconds()
        day.away_seconds = totals[local_day][OnlineStatus.AWAY].total_seconds()
    return list(days.values())


class Point(NamedTuple):
    at: datetime
    online: int
    away: int
    offline: int
    partial: bool = False  # the step holding now: not over yet


def minute_counts(*, now: datetime) -> dict[str, int]:
    """Users per status shown at `now`: a minute's sample of the timeline, as the beat task
    records it (users.services.history.record_counts) and as the live point reads it."""
    counts = status_counts(now=now)
    return {status: counts[status] for status in OnlineStatus.values}


LIVE_COUNTS_CACHE_KEY = "presence:live-minute-counts"
# The live point counts every present user's row (61-73 ms at 100,000 online, bench/REPORT.md,
# row 8), for each admin page that polls the timeline. A count this much older than `now`, in
# the same minute, serves instead: the point is a partial minute's mean, and a change shows
# within these seconds.
LIVE_COUNTS_MAX_AGE = timedelta(seconds=5)


def live_minute_counts(*, now: datetime) -> dict[str, int]:
    """minute_counts at `now`, or as counted at most LIVE_COUNTS_MAX_AGE before `now` within
    its minute (kept in the shared cache for every process)."""
    kept = shared_cache.call("get", LIVE_COUNTS_CACHE_KEY, purpose="timeline")
    if kept is not None:
        counted_at, counts = kept
        if counted_at <= now < counted_at + LIVE_COUNTS_MAX_AGE and _minute_of(counted_at) == _minute_of(now):
            return counts
    counts = minute_counts(now=now)
    timeout = int(LIVE_COUNTS_MAX_AGE.total_seconds())
    shared_cache.call("set", LIVE_COUNTS_CACHE_KEY, (now, counts), timeout=timeout, purpose="timeline")
    return counts


def _minute_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


def timeline(*, start: datetime, end: datetime, step: timedelta, now: datetime | None = None) -> list[Point]:
    """Users per status from start to end, one point per `step` starting at `start`: the
    mean of the minutes in it, rounded half up; a step with no sample (no count was
    recorded) is left out.

    With `now`, when [start, end) holds now's minute: that minute's sample is the live count
    (live_minute_counts at `now`: what the beat would record now, which it may not have done
    yet, the last of a minute winning), and the step holding it is the last point, `partial`.
    Without `now` no point is partial: what the cache keeps (users.api.history)."""
    minute = _minute_of(now) if now else None
    live = minute is not None and start <= minute < end
    origin, width = start.timestamp(), step.total_seconds()
    buckets: dict[int, list[int]] = {}  # index: [online, away, offline, samples]
    samples = PresenceCount.objects.filter(at__gte=start, at__lt=minute if live else end).order_by("at")
    rows = list(samples.values_list("at", "online", "away", "offline"))
    if live:
        counts = live_minute_counts(now=now)
        rows.append((minute, counts["online"], counts["away"], counts["offline"]))
    for at, online, away, offline in rows:
        bucket = buckets.setdefault(int((at.timestamp() - origin) // width), [0, 0, 0, 0])
        bucket[0] += online
        bucket[1] += away
        bucket[2] += offline
        bucket[3] += 1
    points = [
        Point(start + index * step, *(_mean_half_up(total, n) for total in (online, away, offline)))
        for index, (online, away, offline, n) in sorted(buckets.items())
    ]
    if live:
        points[-1] = points[-1]._replace(partial=True)
    return points


def _mean_half_up(total: int, n: int) -> int:
    """round(total / n) with halves up (Python's round() takes them to the even number)."""
    return (2 * total + n) // (2 * n)
