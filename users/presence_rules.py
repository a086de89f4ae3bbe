"""Every presence rule and its thresholds, each rule's forms side by side.

A rule that must run both on rows already loaded (Python) and in the database (SQL) is
stated twice here, next to each other, and a test checks that the two forms agree
(users/tests/test_presence_rules.py). Nothing else in the project compares a presence
timestamp with a threshold.

The status shown (computed at read time, never trusted from the column):

    offline  if no live session, or no connection for PRESENCE_INACTIVITY_TIMEOUT
    else     the user's manual status, if they set one
    away     if every live session reports away, or no input for PRESENCE_AWAY_AFTER
    online   otherwise

The stored `online_status` is what the user's live sessions report, merged with online
beating away (Synapse's priority across devices), or offline with none.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from django.conf import settings
from django.db.models import Case, CharField, Exists, IntegerField, OuterRef, Q, Value, When
from django.utils import timezone

from users.models import PRESENT_STATUSES, OnlineStatus, PresenceSession, ReportedStatus, User


# --- Thresholds -----------------------------------------------------------------------
def inactivity_timeout() -> timedelta:
    return timedelta(seconds=settings.PRESENCE_INACTIVITY_TIMEOUT)


def away_after() -> timedelta:
    return timedelta(seconds=settings.PRESENCE_AWAY_AFTER)


def transition_margin() -> timedelta:
    """How long a presence write may take from its timestamp to its commit.

    A write that cannot change any shown status within this margin of its timestamp skips
    the change feed's id; one that takes longer takes an id anyway (users.services.presence).
    Half the timeout: far from every heartbeat of a connected client.
    """
    return inactivity_timeout() / 2


def write_granularity(*, heartbeat: bool) -> timedelta:
    """How old a row must be before activity rewrites it.

    Heartbeats: PRESENCE_WRITE_GRANULARITY (25 s), just under their interval, so last_seen
    moves with every heartbeat. Other requests wait one heartbeat interval longer (55 s):
    while a client heartbeats, its heartbeats do all the writing and the requests between
    them write nothing, yet a client that only makes requests is still kept online (Zulip
    rewrites at 55 s). 0 turns coalescing off: every request writes (the benchmark's naive
    baseline).
    """
    seconds = settings.PRESENCE_WRITE_GRANULARITY
    if seconds and not heartbeat:
        seconds += settings.PRESENCE_HEARTBEAT_INTERVAL
    return timedelta(seconds=seconds)


# --- The status shown: Python and SQL -------------------------------------------------
@dataclass(frozen=True, slots=True)
class StatusRule:
    """The status-shown rule at one moment, its limits read once: a list judges all its rows
    at one `now`, and reading the thresholds again for each of a change feed's 500 rows was
    a tenth of building them (bench/analysis.md, row 6)."""

    connected_after: datetime  # a user last seen at or before this is offline
    active_after: datetime  # a connected user whose last input is at or before this is away

    def status_of(self, user: User) -> str:
        if user.online_status == OnlineStatus.OFFLINE or user.last_seen is None:
            return OnlineStatus.OFFLINE
        if user.last_seen <= self.connected_after:
            return OnlineStatus.OFFLINE
        if user.manual_status:
            return user.manual_status
        if user.online_status == OnlineStatus.AWAY or user.last_active is None:
            return OnlineStatus.AWAY
        if user.last_active <= self.active_after:
            return OnlineStatus.AWAY
        return OnlineStatus.ONLINE


def status_rule_at(*, now: datetime) -> StatusRule:
    return StatusRule(connected_after=now - inactivity_timeout(), active_after=now - away_after())


def effective_status(*, user: User, now: datetime | None = None) -> str:
    return status_rule_at(now=now or timezone.now()).status_of(user)


def status_q(status: str, *, now: datetime) -> Q:
    """The users whose effective status is `status` at `now`, as a filter on stored columns
    (so that the online filter can use the partial index on present statuses)."""
    connected = Q(online_status__in=PRESENT_STATUSES, last_seen__gt=now - inactivity_timeout())
    recently_active = Q(online_status=OnlineStatus.ONLINE, last_active__gt=now - away_after())
    if status == OnlineStatus.ONLINE:
        return connected & (Q(manual_status=OnlineStatus.ONLINE) | (Q(manual_status__isnull=True) & recently_active))
    if status == OnlineStatus.AWAY:
        return connected & (Q(manual_status=OnlineStatus.AWAY) | (Q(manual_status__isnull=True) & ~recently_active))
    return ~connected


def effective_status_expression(*, now: datetime) -> Case:
    return Case(
        When(status_q(OnlineStatus.ONLINE, now=now), then=Value(OnlineStatus.ONLINE)),
        When(status_q(OnlineStatus.AWAY, now=now), then=Value(OnlineStatus.AWAY)),
        default=Value(OnlineStatus.OFFLINE),
        output_field=CharField(),
    )


# --- Ranking by the status shown: Python and SQL --------------------------------------
# How present a status is: ordering by it descending lists online, away, offline (not the
# strings' alphabetical order).
STATUS_RANK = {OnlineStatus.OFFLINE: 0, OnlineStatus.AWAY: 1, OnlineStatus.ONLINE: 2}


def status_rank(*, user: User, now: datetime | None = None) -> int:
    return STATUS_RANK[effective_status(user=user, now=now)]


def status_rank_expression(*, now: datetime) -> Case:
    """status_rank as SQL, for ORDER BY: the status shown at `now`, ranked."""
    return Case(
        When(status_q(OnlineStatus.ONLINE, now=now), then=Value(STATUS_RANK[OnlineStatus.ONLINE])),
        When(status_q(OnlineStatus.AWAY, now=now), then=Value(STATUS_RANK[OnlineStatus.AWAY])),
        default=Value(STATUS_RANK[OnlineStatus.OFFLINE]),
        output_field=IntegerField(),
    )


def crossed_a_limit_q(*, since: datetime, now: datetime) -> Q:
    """Present users whose status the clock alone changed between `since` and `now`: their
    last_seen or last_active crossed its limit, with no write (the change feed's second kind
    of change)."""
    return Q(online_status__in=PRESENT_STATUSES) & (
        Q(last_seen__gt=since - inactivity_timeout(), last_seen__lte=now - inactivity_timeout())
        | input_went_stale_q(since=since, now=now)
    )


def input_went_stale_q(*, since: datetime, now: datetime) -> Q:
    """Users whose last input crossed PRESENCE_AWAY_AFTER between `since` and `now`."""
    return Q(last_active__gt=since - away_after(), last_active__lte=now - away_after())


def crossed_a_limit(
    *, last_seen: datetime | None, last_active: datetime | None, since: datetime, now: datetime
) -> bool:
    """crossed_a_limit_q in Python, for a user known to be present."""
    return crossing_window(since=since, now=now).crossed(last_seen=last_seen, last_active=last_active)


@dataclass(frozen=True, slots=True)
class CrossingWindow:
    """crossed_a_limit between one `since` and `now`, its bounds computed once: a poll tests
    every row of a clock-crossings read (thousands at 100,000 users online), and reading the
    thresholds from settings for each row cost more than the test (bench/analysis.md, row 6)."""

    last_seen_after: datetime
    last_seen_until: datetime
    last_active_after: datetime
    last_active_until: datetime

    def crossed(self, *, last_seen: datetime | None, last_active: datetime | None) -> bool:
        return (last_seen is not None and self.last_seen_after < last_seen <= self.last_seen_until) or (
            last_active is not None and self.last_active_after < last_active <= self.last_active_until
        )


def crossing_window(*, since: datetime, now: datetime) -> CrossingWindow:
    timeout, idle = inactivity_timeout(), away_after()
    return CrossingWindow(
        last_seen_after=since - timeout,
        last_seen_until=now - timeout,
        last_active_after=since - idle,
        last_active_until=now - idle,
    )


def crossings_known_ahead() -> timedelta:
    """How far past a read every clock crossing is already decided by what the read sees.

    A write that moves last_seen or last_active without a feed id commits within the
    transition margin of its timestamp (users.services.presence takes an id for any slower
    one), so one the read missed crosses a limit no sooner than the timeout less the margin
    after the read. Until then the read's rows, and feed ids for the rest, tell every crossing.
    """
    return min(inactivity_timeout(), away_after()) - transition_margin()


# --- The stored status across devices: Python and SQL ---------------------------------
def aggregate_status(reported_statuses: Iterable[str]) -> str:
    """The stored status of a user whose live sessions report `reported_statuses`: online
    beats away beats offline (none live)."""
    reported = set(reported_statuses)
    if ReportedStatus.ONLINE in reported:
        return OnlineStatus.ONLINE
    return OnlineStatus.AWAY if reported else OnlineStatus.OFFLINE


def aggregate_status_expression() -> Case:
    """aggregate_status as SQL over each user's live sessions, for set-based writes."""
    live = PresenceSession.objects.filter(user=OuterRef("pk"), ended_at__isnull=True)
    return Case(
        When(Exists(live.filter(reported_status=ReportedStatus.ONLINE)), then=Value(OnlineStatus.ONLINE)),
        When(Exists(live), then=Value(OnlineStatus.AWAY)),
        default=Value(OnlineStatus.OFFLINE),
        output_field=CharField(),
    )


# --- The write fast path: Python and SQL ----------------------------------------------
def statuses_that_absorb(reported_status: str) -> tuple[str, ...]:
    """Stored statuses that a session reporting `reported_status` leaves as they are
    (online beats away)."""
    if reported_status == ReportedStatus.AWAY:
        return PRESENT_STATUSES
    return (OnlineStatus.ONLINE,)


def loaded_row_shows_the_same(*, user: User, session: PresenceSession, at: datetime, active: bool) -> bool:
    """Python form of shows_the_same_after_activity, for the rows loaded with the request."""
    margin = transition_margin()
    if user.online_status not in statuses_that_absorb(session.reported_status):
        return False
    if user.last_seen <= at - inactivity_timeout() + margin:
        return False
    if not active or user.manual_status or user.online_status == OnlineStatus.AWAY:
        return True
    return user.last_active is not None and user.last_active > at - away_after() + margin


def shows_the_same_after_activity(*, reported_status: str, active: bool, at: datetime) -> Q:
    """The rows that this activity cannot move to another status, now or within the margin:
    the fast path's WHERE clause. Anything else takes the slow path."""
    margin = transition_margin()
    same = Q(online_status__in=statuses_that_absorb(reported_status), last_seen__gt=at - inactivity_timeout() + margin)
    if active:
        same &= (
            Q(manual_status__isnull=False)
            | Q(online_status=OnlineStatus.AWAY)
            | Q(last_active__gt=at - away_after() + margin)
        )
    return same


@cache
def shows_the_same_after_activity_sql(*, active: bool) -> str:
    """shows_the_same_after_activity as PostgreSQL text over the "users" table, for a
    statement written by hand (users.services.presence's one-statement write). Its text
    depends on `active` alone, so that statement is built once per combination of flags;
    the thresholds come as the named parameters of shows_the_same_after_activity_params."""
    same = [
        '"users"."online_status" = ANY(%(absorbing_statuses)s)',
        '"users"."last_seen" > %(connected_after)s',
    ]
    if active:
        same.append(
            '("users"."manual_status" IS NOT NULL OR "users"."online_status" = %(away_status)s'
            ' OR "users"."last_active" > %(active_after)s)'
        )
    return " AND ".join(same)


def shows_the_same_after_activity_params(*, reported_status: str, active: bool, at: datetime) -> dict:
    """The thresholds of shows_the_same_after_activity_sql for one activity, from the same
    rules as the Q form: named, so that they mix with the enclosing statement's own."""
    margin = transition_margin()
    params = {
        "absorbing_statuses": list(statuses_that_absorb(reported_status)),
        "connected_after": at - inactivity_timeout() + margin,
    }
    if active:
        params |= {"away_status": OnlineStatus.AWAY, "active_after": at - away_after() + margin}
    return params
