"""Presence over time: intervals of the status shown, and users per status each minute.

Intervals are written by the presence writes themselves (users.services.presence), inside their
transactions, and only when what a user shows changes: a plain heartbeat, a ping or a touch
writes nothing here. Transitions the clock makes with no write (away after
PRESENCE_AWAY_AFTER without input, offline after PRESENCE_INACTIVITY_TIMEOUT) are recorded
by the next sweep, at the moment they happened (computed from last_active and last_seen), in
a fixed number of statements whatever the number of users. Until that sweep, a user's open
interval may run up to one sweep interval past the clock's transition.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Case, DateTimeField, F, OuterRef, Q, Subquery, Value, When
from django.db.models.functions import Coalesce, Greatest

from offchat_backend.db import ids_in
from users.models import OnlineStatus, PresenceCount, PresenceInterval, User
from users.presence_rules import away_after, inactivity_timeout, input_went_stale_q, status_q, status_rule_at
from users.selectors.history import minute_counts

# How far back a sweep looks for the clock's away transitions, before the previous sweep:
# a user whose row was locked by another writer at that sweep (skipped, not waited for) is
# found by one of the next ten sweeps, and the read stays bounded by recent transitions.
RECHECKED_SWEEPS_SPAN = timedelta(minutes=10)


def record_shown_statuses(*, users: list[User], at: datetime) -> None:
    """After a write that may have changed what these users show (their rows as written,
    locked by the caller): close each open interval whose status no longer holds, open one
    for each user now shown online or away. Three statements at most, whatever the count.

    A change is dated `at`, except the clock's own: a user found away only because their
    last input is older than PRESENCE_AWAY_AFTER turned away then, not at this write (a
    socket opening on an idle user's second tab, say, before the sweep saw it)."""
    rule = status_rule_at(now=at)
    shown = {user.pk: rule.status_of(user) for user in users}
    open_now = {
        user_id: (status, started_at)
        for user_id, status, started_at in PresenceInterval.objects.filter(
            ids_in("user_id", shown), ended_at__isnull=True
        ).values_list("user_id", "status", "started_at")
    }
    changed = [
        user_id for user_id, status in shown.items() if open_now.get(user_id, (OnlineStatus.OFFLINE, None))[0] != status
    ]
    if not changed:
        return
    by_id = {user.pk: user for user in users}
    moment = {user_id: _changed_at(by_id[user_id], open_now.get(user_id), shown[user_id], at) for user_id in changed}
    closing = [user_id for user_id in changed if user_id in open_now]
    if closing:
        # One branch per moment, not per user: a sweep closes hundreds of intervals at its own
        # moment, and the ORM took ~0.2 ms to build each branch (23 ms of a 1M-user sweep).
        closing_at: dict[datetime, list[int]] = {}
        for user_id in closing:
            closing_at.setdefault(moment[user_id], []).append(user_id)
        ended_at = Case(
            *(When(ids_in("user_id", user_ids), then=Value(when)) for when, user_ids in closing_at.items()),
            output_field=DateTimeField(),
        )
        PresenceInterval.objects.filter(ids_in("user_id", closing), ended_at__isnull=True).update(
            ended_at=Greatest(F("started_at"), ended_at)
        )
    opening = [user_id for user_id in changed if shown[user_id] != OnlineStatus.OFFLINE]
    PresenceInterval.objects.bulk_create(
        [PresenceInterval(user_id=user_id, status=shown[user_id], started_at=moment[user_id]) for user_id in opening]
    )


def _changed_at(user: User, open_interval, shown: str, at: datetime) -> datetime:
    """When `user` started to show `shown`: `at`, or the moment the clock turned them away."""
    if open_interval is None or open_interval[0] != OnlineStatus.ONLINE or shown != OnlineStatus.AWAY:
        return at
    if user.manual_status or user.online_status != OnlineStatus.ONLINE or user.last_active is None:
        return at  # away by a report or a manual status: this write made it so
    return min(at, max(open_interval[1], user.last_active + away_after()))


def close_for_inactivity(*, user_ids) -> None:
    """The sweep's stale users were shown offline from last_seen + the timeout on (not from
    the sweep's own time): their open intervals end then."""
    last_seen = User.objects.filter(pk=OuterRef("user_id")).values("last_seen")[:1]
    shown_offline_at = Subquery(last_seen, output_field=DateTimeField()) + Value(inactivity_timeout())
    PresenceInterval.objects.filter(ids_in("user_id", user_ids), ended_at__isnull=True).update(
        ended_at=Greatest(F("started_at"), Coalesce(shown_offline_at, F("started_at")))
    )


def close_timed_out(*, user_id: int, at: datetime) -> None:
    """A user coming back after their connection timed out, before any sweep noticed: their
    open interval ended when they were shown offline, so the gap stays in the history."""
    PresenceInterval.objects.filter(user_id=user_id, ended_at__isnull=True).update(
        ended_at=Greatest(F("started_at"), Value(at))
    )


def record_clock_transitions(*, now: datetime, since: datetime | None = None) -> None:
    """Users shown away by the clock alone (online stored, no input for PRESENCE_AWAY_AFTER)
    whose open interval still says online: it ends, and an away one starts, at the moment the
    clock turned them away. Users whose row another writer holds are left to that writer
    (it records what it changes). Four statements at most, whatever the count.

    `since`: the previous call's `now` (the last sweep's). Users whose input went stale
    before it were recorded then, so only those whose input went stale since (and over
    RECHECKED_SWEEPS_SPAN before, for a row another writer held then) are read, not every
    present user."""
    still_online = PresenceInterval.objects.filter(ended_at__isnull=True, status=OnlineStatus.ONLINE)
    turned_away = User.objects.filter(
        status_q(OnlineStatus.AWAY, now=now), online_status=OnlineStatus.ONLINE, manual_status__isnull=True
    )
    if since is not None and since < now:
        turned_away = turned_away.filter(
            input_went_stale_q(since=since - RECHECKED_SWEEPS_SPAN, now=now) | Q(last_active__isnull=True)
        )
    last_active = dict(
        turned_away.select_for_update(skip_locked=True)
        .filter(pk__in=still_online.values("user_id"))
        .values_list("pk", "last_active")
    )
    if not last_active:
        return
    turned = list(still_online.filter(user_id__in=last_active).values_list("pk", "user_id", "started_at"))
    away_since = {pk: max(started, (last_active[user_id] or started) + away_after()) for pk, user_id, started in turned}
    PresenceInterval.objects.filter(pk__in=away_since).update(
        ended_at=Case(*(When(pk=pk, then=Value(at)) for pk, at in away_since.items()), output_field=DateTimeField())
    )
    PresenceInterval.objects.bulk_create(
        [
            PresenceInterval(user_id=user_id, status=OnlineStatus.AWAY, started_at=away_since[pk])
            for pk, user_id, _ in turned
        ]
    )


def record_counts(*, at: datetime) -> None:
    """Users per status shown at `at`'s minute (beat, every minute; the last of a minute
    wins). Its own task, not the sweep's: counting every active user grows with the table,
    and the sweep must not."""
    PresenceCount.objects.update_or_create(at=at.replace(second=0, microsecond=0), defaults=minute_counts(now=at))


def prune(*, now: datetime) -> tuple[int, int]:
    """Drop what is older than PRESENCE_HISTORY_DAYS. Returns (intervals, counts) deleted."""
    cutoff = now - timedelta(days=settings.PRESENCE_HISTORY_DAYS)
    intervals, _ = PresenceInterval.objects.filter(ended_at__lt=cutoff).delete()
    counts, _ = PresenceCount.objects.filter(at__lt=cutoff).delete()
    return intervals, counts
