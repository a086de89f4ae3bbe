"""Read-side queries for the account lists."""

from django.db.models import QuerySet
from django.utils import timezone

from users.models import OnlineStatus, User
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


def role_of(user: User) -> str:
    """The role the OffChat frontend reads: staff are `admin` (it lets them into its admin
    area), everyone else `user`. Derived, not stored: staff is the one permission we have."""
    return "admin" if user.is_staff else "user"


def user_directory() -> QuerySet[User]:
    """Every active account, as any signed-in user may see it."""
    return User.objects.filter(is_active=True).only(*DIRECTORY_FIELDS).order_by("username", "id")


def users_for_admin() -> QuerySet[User]:
    """Every account, deactivated ones included: admins manage them too."""
    return User.objects.only(*ADMIN_FIELDS).order_by("username", "id")


def online_users_for_admin(*, now=None) -> QuerySet[User]:
    return users_for_admin().filter(status_q(OnlineStatus.ONLINE, now=now or timezone.now()))
