"""Read-side queries for the account lists."""

from datetime import datetime

from django.db.models import BooleanField, Case, QuerySet, Value, When
from django.db.models.functions import Lower
from django.utils import timezone

from users.models import PRESENT_STATUSES, OnlineStatus, User
from users.presence_rules import status_q

DIRECTORY_FIELDS = (
    "id",
    "username",
    "first_name",
    "last_name",
    # What the presence computation reads (users.selectors.presence).
    "online_status",
    "last_seen",
    "last_active",
    "manual_status",
    "share_presence",
)
ADMIN_FIELDS = DIRECTORY_FIELDS + ("email", "is_staff", "is_active", "date_joined")


ROLES = ("admin", "user")

# What staff may do through the admin API, by the names the OffChat frontend checks before it
# shows an admin tab. Every staff account may do all of it (IsAdminUser guards each path);
# other accounts none.
STAFF_PERMISSIONS = (
    "view_users",  # the admin lists, a user's presence and sessions, the counters
    "view_presence_history",  # a user's history, the timeline
    "set_user_status",  # set-online-status
    "force_logout_user",  # force-logout, ending one session
    "manage_users",  # adding accounts
)


def role_of(user: User) -> str:
    """The role the OffChat frontend reads: staff are `admin` (it lets them into its admin
    area), everyone else `user`. Derived, not stored: staff is the one permission we have."""
    return "admin" if user.is_staff else "user"


def permissions_of(user: User) -> list[str]:
    return list(STAFF_PERMISSIONS) if user.is_staff else []


def role_grants_staff(role: str) -> bool:
    """The inverse of role_of, for an account being made with a role."""
    return role == "admin"


def user_directory() -> QuerySet[User]:
    """Every active account, as any signed-in user may see it."""
    return User.objects.filter(is_active=True).only(*DIRECTORY_FIELDS).order_by("username", "id")


def username_taken(*, username: str) -> bool:
    """Whether an account has `username`, whatever its case (the rule of
    users_username_lower_unique), asked through that constraint's index. `username__iexact`
    compares UPPER() forms, which no index holds: it read every account's name, 327 ms at
    1,000,000 accounts against 0.05 ms (EXPLAIN ANALYZE on the bench table)."""
    return User.objects.alias(lowered=Lower("username")).filter(lowered=Lower(Value(username))).exists()


def as_rows(queryset: QuerySet[User], *, fields) -> QuerySet:
    """The users of `queryset` as named rows (`pk` and `fields`, read as attributes), not model
    instances, for lists that only show them: a change feed's 500 rows were read in ~10 ms as
    model instances and in ~5 ms as named rows, of a ~26 ms poll (bench/analysis.md, issue 22)."""
    return queryset.values_list("pk", *fields, named=True)


def users_for_admin() -> QuerySet[User]:
    """Every account, deactivated ones included: admins manage them too."""
    return User.objects.only(*ADMIN_FIELDS).order_by("username", "id")


def online_users_for_admin(*, now=None) -> QuerySet[User]:
    return shown_status(users_for_admin(), OnlineStatus.ONLINE, now=now or timezone.now())


def shown_status(queryset: QuerySet[User], status: str, *, now: datetime) -> QuerySet[User]:
    """The users of `queryset` shown `status` at `now`: users.presence_rules.status_q, in a
    form whose plan does not depend on how fresh PostgreSQL's statistics are.

    Present users' last_seen and last_active are always newer than the last ANALYZE (every
    heartbeat moves them), so the planner, reading status_q's comparisons against a stale
    histogram, expects about one online user in a million and sorts every present user to
    serve a page of 50. Here the rule is one CASE expression, whose selectivity PostgreSQL
    cannot read from any histogram and takes as a half, and the index condition is the
    stored status alone (implied by the rule for online and away), estimated from its own
    slowly-moving statistics. The planner then expects thousands of matching rows and reads
    a page off users_present_username_idx in username order, stopping after the page.
    """
    rule = Case(When(status_q(status, now=now), then=Value(True)), default=Value(False), output_field=BooleanField())
    if status != OnlineStatus.OFFLINE:
        queryset = queryset.filter(online_status__in=PRESENT_STATUSES)
    return queryset.filter(rule)
