"""Presence as the endpoints report it: computed at read time by users.presence_rules,
never trusted from the column, with each viewer's privacy applied."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count

from offchat_backend import shared_cache
from users.models import PRESENT_STATUSES, OnlineStatus, PresenceSweep, User
from users.presence_rules import status_q, status_rule_at


@dataclass(frozen=True)
class ShownPresence:
    status: str
    last_seen: datetime | None


HIDDEN = ShownPresence(OnlineStatus.OFFLINE, None)


def presence_shown_to(*, viewer: User, user: User, now: datetime) -> ShownPresence:
    """What `viewer` sees of `user` in a list.

    Privacy: a user who does not share presence is offline with no last_seen to other
    non-staff users (WhatsApp's hidden last seen); staff and the user see the truth.
    Lists show `last_seen` for offline users only. Online and away users are here now, and
    their last_seen moves with every heartbeat: showing it would change every poll's body
    and defeat the ETag, for a figure that says nothing a status does not.
    """
    return presence_seen_by(viewer=viewer, now=now)(user)


def presence_seen_by(*, viewer: User, now: datetime) -> Callable[[User], ShownPresence]:
    """presence_shown_to for many users seen by one viewer at one moment (a list's rows): the
    viewer and the rule's limits are read once, not once a row."""
    rule, sees_everyone, viewer_id = status_rule_at(now=now), viewer.is_staff, viewer.pk

    def shown(user: User) -> ShownPresence:
        if not (sees_everyone or user.share_presence or user.pk == viewer_id):
            return HIDDEN
        status = rule.status_of(user)
        return ShownPresence(status, user.last_seen if status == OnlineStatus.OFFLINE else None)

    return shown


def status_counts(*, now: datetime) -> dict[str, int]:
    """Active users per shown status (privacy aside: for staff and operators).

    Online and away are counted over the present part of the table only (the partial
    index); offline is the rest of the active accounts (active_account_count), so the count
    never reads the offline majority's rows.
    """
    present = User.objects.filter(is_active=True, online_status__in=PRESENT_STATUSES).aggregate(
        online=Count("pk", filter=status_q(OnlineStatus.ONLINE, now=now)),
        away=Count("pk", filter=status_q(OnlineStatus.AWAY, now=now)),
    )
    total = active_account_count()
    # max(): accounts made or reactivated past the ORM (bulk inserts, an UPDATE: no signal) are
    # missing from a kept total until it expires; offline must not go below zero meanwhile.
    total = max(total, present["online"] + present["away"])
    return {**present, "offline": total - present["online"] - present["away"], "total": total}


ACTIVE_ACCOUNTS_CACHE_KEY = "presence:active-accounts"
# Counting a million accounts read every row (160 ms at 1,000,000 users, for each summary, each
# metrics scrape, each beat and each timeline ending now); accounts change rarely, and each
# change through the ORM forgets the count (users.signals). An UPDATE that bypasses the ORM
# is counted within this many seconds.
ACTIVE_ACCOUNTS_TTL = 60


def active_account_count() -> int:
    count = shared_cache.call("get", ACTIVE_ACCOUNTS_CACHE_KEY, purpose="accounts")
    if count is None:
        count = User.objects.filter(is_active=True).count()
        shared_cache.call("set", ACTIVE_ACCOUNTS_CACHE_KEY, count, timeout=ACTIVE_ACCOUNTS_TTL, purpose="accounts")
    return count


def forget_active_account_count() -> None:
    shared_cache.call("delete", ACTIVE_ACCOUNTS_CACHE_KEY, purpose="accounts")


def last_sweep() -> PresenceSweep:
    """The sweeper's record; an unsaved blank one (never swept) if a flush removed the row."""
    return PresenceSweep.objects.filter(pk=1).first() or PresenceSweep()
