"""The change feed's read side: where a poller is (its cursor), and what changed since.

Ids are handed out by users.services.feed; the HTTP form (`?since=`, ETag) is
users.api.lists.PresenceListMixin.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Q, QuerySet

from users.exceptions import InvalidCursorError, ResyncRequiredError
from users.models import PresenceSequence, PresenceTombstone, User
from users.presence_rules import crossed_a_limit_q, transition_margin


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


def changes_since(*, queryset: QuerySet[User], cursor: Cursor, now: datetime, limit: int | None = None) -> Changes:
    """The users of `queryset` whose presence may have changed since `cursor`, and the ids of
    those that left it (deleted, deactivated, filtered out).

    Two kinds of change: writes, which take a feed id in commit order (Zulip's counter:
    `update_id > cursor` misses no commit), and the clock, which turns users away or offline
    with no write at all: those whose last_seen or last_active crossed its limit since the
    cursor. A write that lands while a poll reads is either invisible to it and carries a
    later id, or (a plain heartbeat) cannot change a status within the margin the window
    overlaps by (users.services.presence.record_activity). Past `limit` changed users
    (PRESENCE_FEED_MAX_CHANGES) it raises ResyncRequiredError.
    """
    next_cursor = current_cursor(now=now)
    crossed_a_limit = crossed_a_limit_q(since=cursor.at - transition_margin(), now=now)
    limit = limit or settings.PRESENCE_FEED_MAX_CHANGES
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
