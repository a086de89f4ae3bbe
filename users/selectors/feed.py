"""The change feed's read side: where a poller is (its cursor), and what changed since.

Ids are handed out by users.services.feed; the HTTP form (`?since=`, ETag) is
users.api.lists.PresenceListMixin.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone

from offchat_backend import shared_cache
from offchat_backend.db import ids_in
from users.exceptions import InvalidCursorError, ResyncRequiredError
from users.models import PresenceSequence, PresenceTombstone, User
from users.presence_rules import crossed_a_limit_q, crossing_window, crossings_known_ahead, transition_margin


@dataclass(frozen=True)
class Cursor:
    """Where a poller is: every change feed id up to `update_id` seen, statuses computed at `at`."""

    update_id: int
    at: datetime

    def __str__(self):
        return f"{self.update_id}-{int(self.at.timestamp() * 1000)}"


_CURSOR = re.compile(r"(\d{1,18})-(\d{1,15})")


def current_cursor(*, now: datetime) -> Cursor:
    """Read before the rows it stands for: every id up to it is committed and visible."""
    return Cursor(update_id=_last_update_id(), at=now)


def parse_cursor(raw: str, *, now: datetime, head: Cursor | None = None) -> Cursor:
    """`head`: the current cursor, when the caller read it already (one read less a poll)."""
    match = _CURSOR.fullmatch(raw)
    if not match:
        raise InvalidCursorError("Malformed cursor: pass the `cursor` of an earlier response.")
    update_id, millis = int(match[1]), int(match[2])
    at = datetime.fromtimestamp(millis / 1000, tz=UTC)
    last_update_id = head.update_id if head is not None else _last_update_id()
    if update_id > last_update_id or at > now + transition_margin():
        raise InvalidCursorError("Unknown cursor: pass the `cursor` of an earlier response.")
    if at < now - timedelta(seconds=settings.PRESENCE_FEED_MAX_AGE):
        raise ResyncRequiredError("The cursor is too old: fetch the full list again.")
    return Cursor(update_id=update_id, at=at)


@dataclass(frozen=True)
class Changes:
    users: list  # what the queryset given yields: User instances, or named rows (accounts.as_rows)
    removed_ids: list[int]
    cursor: Cursor


def changes_since(
    *, queryset: QuerySet[User], cursor: Cursor, now: datetime, limit: int | None = None, head: Cursor | None = None
) -> Changes:
    """The users of `queryset` whose presence may have changed since `cursor`, and the ids of
    those that left it (deleted, deactivated, filtered out).

    Two kinds of change: writes, which take a feed id in commit order (Zulip's counter:
    `update_id > cursor` misses no commit), and the clock, which turns users away or offline
    with no write at all: those whose last_seen or last_active crossed its limit since the
    cursor. A write that lands while a poll reads is either invisible to it and carries a
    later id, or (a plain heartbeat) cannot change a status within the margin the window
    overlaps by (users.services.presence.record_activity). Past `limit` changed users
    (PRESENCE_FEED_MAX_CHANGES) it raises ResyncRequiredError. `head`: the current cursor, read
    before this call (it must be read before the changes are).
    """
    next_cursor = head or current_cursor(now=now)
    since = cursor.at - transition_margin()
    limit = limit or settings.PRESENCE_FEED_MAX_CHANGES
    # The users the clock may have moved, by primary key: the crossing rule alone is a question
    # about every present user's row, which no index answers, and two statements ask it.
    crossed_a_limit = crossed_a_limit_q(since=since, now=now)
    may_have_crossed = _users_crossing(cursor=cursor, since=since, now=now, limit=limit, rule=crossed_a_limit)
    changed = Q(presence_update_id__gt=cursor.update_id) | (crossed_a_limit & Q(ids_in("pk", may_have_crossed)))
    changed_ids = set(User.objects.filter(changed).values_list("pk", flat=True)[: limit + 1])
    deleted_ids = set(
        PresenceTombstone.objects.filter(presence_update_id__gt=cursor.update_id).values_list("user_id", flat=True)[
            : limit + 1
        ]
    )
    if len(changed_ids) + len(deleted_ids) > limit:
        raise _too_many_changes(limit)
    # The rows by the same condition, not by the ids just read: those that left the list are
    # never read again (half of a 1% churn's ids on the online list), and the condition's
    # plan is the changed ids' own (the feed-id index, OR the crossing users' primary keys).
    # A user changed between the two reads is either a fresh row here or in the next poll.
    users = list(queryset.filter(changed)[: limit + 1])
    if len(users) > limit:
        raise _too_many_changes(limit)
    removed = (changed_ids - {user.pk for user in users}) | deleted_ids
    return Changes(users=users, removed_ids=sorted(removed), cursor=next_cursor)


def _users_crossing(*, cursor: Cursor, since: datetime, now: datetime, limit: int, rule: Q) -> list[int]:
    """The users whose last_seen or last_active crossed a limit between `since` and `now`
    (`rule`, crossed_a_limit_q of that window), from a shared read of the clock's crossings,
    or from every present user's row when no read serves the poll (an old cursor); more than
    `limit` of them is a resync."""
    crossings = clock_crossings_for(cursor=cursor, since=since, now=now)
    if crossings is not None:
        crossing = crossings.users_crossing(since=since, now=now)
    else:
        crossing = list(User.objects.filter(rule).values_list("pk", flat=True)[: limit + 1])
    if len(crossing) > limit:
        raise _too_many_changes(limit)
    return crossing


def _too_many_changes(limit: int) -> ResyncRequiredError:
    return ResyncRequiredError(f"More than {limit} users changed since the cursor: fetch the full list again.")


# --- The clock's crossings, read once for every poller --------------------------------
# Which users the clock alone moved (crossed_a_limit_q) is a question about every present
# user's row, and no index can answer it: one on last_seen would cost each heartbeat its HOT
# update. Read per poll, it was most of a poll's time at 100,000 users online, and every
# socket process read it again each tick (bench/REPORT.md, row 6; bench/WS_CAPACITY.md). So
# the rows near their limits are read once, kept in the cache for every process, and each
# poll picks its users from them.
CROSSINGS_CACHE_KEY = "presence:clock-crossings"
# How far back a read reaches: a poll's window starts a transition margin before its cursor,
# so a read serves pollers whose cursor is up to a minute older than it.
CROSSINGS_BEHIND = timedelta(seconds=180)

_kept: "ClockCrossings | None" = None  # this process's copy of the last read it used


@dataclass(frozen=True)
class ClockCrossings:
    """Every present user whose last_seen or last_active crosses its limit between
    `taken_at - CROSSINGS_BEHIND` and `taken_at + crossings_known_ahead()`, read at `taken_at`
    with every feed id up to `update_id` committed: `rows` of (id, last_seen, last_active)."""

    taken_at: datetime
    update_id: int
    rows: tuple[tuple[int, datetime | None, datetime | None], ...]

    def serves(self, *, cursor: Cursor, since: datetime, now: datetime) -> bool:
        """Whether a poll from `cursor` (its window `since` to `now`) finds every user the
        clock moved in these rows or by its feed id. A user this read missed was written
        after it: with a feed id above `update_id`, so above the cursor's, or without one,
        and then crossing after `taken_at + crossings_known_ahead()`, so after `now`."""
        return (
            self.update_id >= cursor.update_id
            and since >= self.taken_at - CROSSINGS_BEHIND
            and now <= self.taken_at + crossings_known_ahead()
        )

    def users_crossing(self, *, since: datetime, now: datetime) -> list[int]:
        window = crossing_window(since=since, now=now)
        return [pk for pk, seen, active in self.rows if window.crossed(last_seen=seen, last_active=active)]


def clock_crossings_for(*, cursor: Cursor, since: datetime, now: datetime) -> ClockCrossings | None:
    """A read of the clock's crossings that serves this poll: this process's, the cache's, or
    a new one (then shared). None when no read can (a cursor older than a read reaches, or a
    `now` the clock has not reached): the poll asks the database itself."""
    global _kept
    kept = _kept  # one look: another thread may replace it
    if kept is not None and kept.serves(cursor=cursor, since=since, now=now):
        return kept
    shared = shared_cache.call("get", CROSSINGS_CACHE_KEY, purpose="feed")
    if shared is not None and shared.serves(cursor=cursor, since=since, now=now):
        _kept = shared
        return shared
    taken_at = timezone.now()
    if since < taken_at - CROSSINGS_BEHIND or now > taken_at + crossings_known_ahead():
        return None  # no read taken now could serve it
    fresh = read_clock_crossings(taken_at=taken_at)
    shared_cache.call(
        "set", CROSSINGS_CACHE_KEY, fresh, timeout=int(crossings_known_ahead().total_seconds()), purpose="feed"
    )
    _kept = fresh
    return fresh


def read_clock_crossings(*, taken_at: datetime) -> ClockCrossings:
    """The crossings near `taken_at`, a time read before this: then the feed id, then the rows
    (each statement sees at least what the one before it saw)."""
    update_id = _last_update_id()
    near_a_limit = crossed_a_limit_q(since=taken_at - CROSSINGS_BEHIND, now=taken_at + crossings_known_ahead())
    rows = User.objects.filter(near_a_limit).values_list("pk", "last_seen", "last_active")
    return ClockCrossings(taken_at=taken_at, update_id=update_id, rows=tuple(rows))


def forget_clock_crossings() -> None:
    """Drop this process's copy (tests, whose databases roll back under it)."""
    global _kept
    _kept = None


def _last_update_id() -> int:
    # SQL of its own: every poll reads it, and the ORM took longer to build this query than
    # PostgreSQL to answer it (7% of a change feed poll, bench/analysis.md, row 6).
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT last_update_id FROM {PresenceSequence._meta.db_table} WHERE id = 1")
        row = cursor.fetchone()
    return row[0] if row else 0
