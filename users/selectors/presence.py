"""Presence as the endpoints report it: computed at read time, never trusted from the column.

The stored `online_status` is what the user's live sessions last reported (online beats
away), or offline with none; the sweep keeps it up to date. What is shown also depends on
the clock, so a dead sweeper cannot leave a stale user online:

    offline  if no live session, or no connection for PRESENCE_INACTIVITY_TIMEOUT
    else     the user's manual status, if they set one
    away     if every live session reports away, or no input for PRESENCE_AWAY_AFTER
    online   otherwise

`effective_status` (Python, for rows already loaded) and `status_q` (SQL, for filters) state
that rule twice; a test checks that they agree on every case.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Case, CharField, Count, Q, QuerySet, Value, When
from django.utils import timezone

from users.exceptions import InvalidCursorError, ResyncRequiredError
from users.models import PRESENT_STATUSES, OnlineStatus, PresenceSequence, PresenceTombstone, User


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


def effective_status(*, user: User, now: datetime | None = None) -> str:
    now = now or timezone.now()
    if user.online_status == OnlineStatus.OFFLINE or user.last_seen is None:
        return OnlineStatus.OFFLINE
    if user.last_seen <= now - inactivity_timeout():
        return OnlineStatus.OFFLINE
    if user.manual_status:
        return user.manual_status
    if user.online_status == OnlineStatus.AWAY or user.last_active is None:
        return OnlineStatus.AWAY
    if user.last_active <= now - away_after():
        return OnlineStatus.AWAY
    return OnlineStatus.ONLINE


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


@dataclass(frozen=True)
class ShownPresence:
    status: str
    last_seen: datetime | None


def presence_shown_to(*, viewer: User, user: User, now: datetime) -> ShownPresence:
    """What `viewer` sees of `user` in a list.

    Privacy: a user who does not share presence is offline with no last_seen to other
    non-staff users (WhatsApp's hidden last seen); staff and the user see the truth.
    Lists show `last_seen` for offline users only. Online and away users are here now, and
    their last_seen moves with every heartbeat: showing it would change every poll's body
    and defeat the ETag, for a figure that says nothing a status does not.
    """
    if not (user.share_presence or viewer.is_staff or viewer.pk == user.pk):
        return ShownPresence(OnlineStatus.OFFLINE, None)
    status = effective_status(user=user, now=now)
    return ShownPresence(status, user.last_seen if status == OnlineStatus.OFFLINE else None)


# --- Change feed ----------------------------------------------------------------------
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


def parse_cursor(raw: str, *, now: datetime) -> Cursor:
    match = _CURSOR.fullmatch(raw)
    if not match:
        raise InvalidCursorError("Malformed cursor: pass the `cursor` of an earlier response.")
    update_id, millis = int(match[1]), int(match[2])
    at = datetime.fromtimestamp(millis / 1000, tz=UTC)
    if update_id > _last_update_id() or at > now + transition_margin():
        raise InvalidCursorError("Unknown cursor: pass the `cursor` of an earlier response.")
    if at < now - timedelta(seconds=settings.PRESENCE_FEED_MAX_AGE):
        raise ResyncRequiredError("The cursor is too old: fetch the full list again.")
    return Cursor(update_id=update_id, at=at)


@dataclass(frozen=True)
class Changes:
    users: list[User]
    removed_ids: list[int]
    cursor: Cursor


def changes_since(*, queryset: QuerySet[User], cursor: Cursor, now: datetime) -> Changes:
    """The users of `queryset` whose presence may have changed since `cursor`, and the ids of
    those that left it (deleted, deactivated, filtered out).

    Two kinds of change: writes, which take a feed id in commit order (Zulip's counter:
    `update_id > cursor` misses no commit), and the clock, which turns users away or offline
    with no write at all: those whose last_seen or last_active crossed its limit since the
    cursor. A write that lands while a poll reads is either invisible to it and carries a
    later id, or (a plain heartbeat) cannot change a status within the margin the window
    overlaps by (users.services.presence.record_activity).
    """
    next_cursor = current_cursor(now=now)
    window_start = cursor.at - transition_margin()
    crossed_a_limit = Q(online_status__in=PRESENT_STATUSES) & (
        Q(last_seen__gt=window_start - inactivity_timeout(), last_seen__lte=now - inactivity_timeout())
        | Q(last_active__gt=window_start - away_after(), last_active__lte=now - away_after())
    )
    limit = settings.PRESENCE_FEED_MAX_CHANGES
    changed_ids = set(
        User.objects.filter(Q(presence_update_id__gt=cursor.update_id) | crossed_a_limit).values_list("pk", flat=True)[
            : limit + 1
        ]
    )
    deleted_ids = set(
        PresenceTombstone.objects.filter(presence_update_id__gt=cursor.update_id).values_list("user_id", flat=True)[
            : limit + 1
        ]
    )
    if len(changed_ids) + len(deleted_ids) > limit:
        raise ResyncRequiredError(f"More than {limit} users changed since the cursor: fetch the full list again.")
    users = list(queryset.filter(pk__in=changed_ids))
    removed = (changed_ids - {user.pk for user in users}) | deleted_ids
    return Changes(users=users, removed_ids=sorted(removed), cursor=next_cursor)


def _last_update_id() -> int:
    return PresenceSequence.objects.filter(pk=1).values_list("last_update_id", flat=True).first() or 0


def status_counts(*, now: datetime) -> dict[str, int]:
    """Active users per shown status (privacy aside: for staff and operators).

    Online and away are counted over the present part of the table only (the partial
    index); offline is the rest, so the count never reads the offline majority's rows twice.
    """
    active = User.objects.filter(is_active=True)
    present = active.filter(online_status__in=PRESENT_STATUSES).aggregate(
        online=Count("pk", filter=status_q(OnlineStatus.ONLINE, now=now)),
        away=Count("pk", filter=status_q(OnlineStatus.AWAY, now=now)),
    )
    total = active.count()
    return {**present, "offline": total - present["online"] - present["away"], "total": total}
