"""Every presence write in the project goes through this module.

Each write is one UPDATE whose WHERE clause states what it expects the row to be, never a
read followed by a save: concurrent writers (a heartbeat racing the sweep, two tabs of one
user) cannot undo each other, and a write that would change nothing does not happen.

Timestamps come from the application clock (`timezone.now()`), never the database's, so
tests can move time with time-machine and every writer agrees on one clock.
"""

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from users.models import PRESENT_STATUSES, OnlineStatus, User


def mark_online(*, user: User, at=None) -> None:
    """The user arrived (login): online, last seen now."""
    _write_status_and_last_seen(user=user, status=OnlineStatus.ONLINE, at=at or timezone.now())


def mark_offline(*, user: User, at=None) -> None:
    """The user left (logout): offline, last seen now, the moment they left."""
    _write_status_and_last_seen(user=user, status=OnlineStatus.OFFLINE, at=at or timezone.now())


def set_status(*, user: User, status: str) -> bool:
    """Set the status alone (an admin's decision). last_seen stays the user's own activity.

    The sweep still applies: a user set online or away who shows no activity goes offline
    at the first sweep after the inactivity timeout.
    """
    changed = User.objects.filter(pk=user.pk).exclude(online_status=status).update(online_status=status)
    user.online_status = status
    return bool(changed)


def record_activity(*, user: User, at=None) -> bool:
    """The user did something (heartbeat or any authenticated request): online, last seen now.

    Coalesced: a row already online whose last_seen is younger than
    PRESENCE_WRITE_GRANULARITY is left alone, so a burst of requests costs one write.
    A row whose last_seen is already later than `at` (a logout that committed while this
    request ran) is left alone too: a slow request must not bring a logged-out user back.
    Returns whether the row was written.
    """
    at = at or timezone.now()
    fresh_since = at - timedelta(seconds=settings.PRESENCE_WRITE_GRANULARITY)
    never_seen = Q(last_seen__isnull=True)
    changed = (
        User.objects.filter(pk=user.pk)
        .filter(never_seen | Q(last_seen__lt=at))
        .filter(never_seen | ~Q(online_status=OnlineStatus.ONLINE) | Q(last_seen__lte=fresh_since))
        .update(online_status=OnlineStatus.ONLINE, last_seen=at)
    )
    if changed:
        user.online_status, user.last_seen = OnlineStatus.ONLINE, at
    return bool(changed)


def mark_inactive_users_offline(*, now=None) -> int:
    """The sweep: every present user inactive for PRESENCE_INACTIVITY_TIMEOUT goes offline.

    One UPDATE whose WHERE re-checks last_seen. On PostgreSQL a heartbeat that commits while
    the sweep waits for its row lock makes the row fail the re-check, so an active user never
    ends offline. Users present with no last_seen at all (set by an admin, never active)
    count as inactive. Returns how many users changed.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.PRESENCE_INACTIVITY_TIMEOUT)
    return (
        User.objects.filter(online_status__in=PRESENT_STATUSES)
        .filter(Q(last_seen__lt=cutoff) | Q(last_seen__isnull=True))
        .update(online_status=OnlineStatus.OFFLINE)
    )


def _write_status_and_last_seen(*, user: User, status: str, at) -> None:
    User.objects.filter(pk=user.pk).update(online_status=status, last_seen=at)
    user.online_status, user.last_seen = status, at
