"""The change feed's write side: ids handed out in commit order, and tombstones.

Every write that changes what lists show takes an id here, as the last lock of its
transaction (users.models.PresenceSequence); pollers read the feed through
users.selectors.feed.
"""

from django.db import connection, transaction
from django.utils import timezone

from users.models import PresenceSequence, PresenceTombstone, User


def record_account_change(*, user: User) -> None:
    """A new or edited account (names, deactivation) reaches pollers through the feed."""
    with transaction.atomic():
        user.presence_update_id = take_feed_id(user_ids=[user.pk])


def record_account_deleted(*, user_id: int) -> None:
    with transaction.atomic():
        PresenceTombstone.objects.update_or_create(
            user_id=user_id, defaults={"presence_update_id": next_feed_id(), "deleted_at": timezone.now()}
        )


def prune_tombstones(*, older_than) -> None:
    PresenceTombstone.objects.filter(deleted_at__lt=older_than).delete()


def take_feed_id(*, user_ids) -> int:
    """The next feed id, given to these users' rows."""
    update_id = next_feed_id()
    User.objects.filter(pk__in=list(user_ids)).update(presence_update_id=update_id)
    return update_id


def next_feed_id() -> int:
    """The next change-feed id. Its row lock is held until the caller's transaction commits,
    so no later id can commit before this one: callers take it last."""
    assert connection.in_atomic_block, "a feed id is taken inside the transaction it numbers"
    table = PresenceSequence._meta.db_table
    with connection.cursor() as cursor:
        for _ in range(2):
            cursor.execute(
                f"UPDATE {table} SET last_update_id = last_update_id + 1 WHERE id = 1 RETURNING last_update_id"
            )
            row = cursor.fetchone()
            if row:
                return row[0]
            # The row is made by a migration; a test database flush removes it.
            PresenceSequence.objects.get_or_create(pk=1)
    raise RuntimeError("presence_sequence has no row")
