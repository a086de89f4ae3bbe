"""Account changes made anywhere (the Django admin, createsuperuser, a password change)
reach the change feed, in the transaction that made them (User.save is atomic), and the
kept count of active accounts is forgotten once they commit."""

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from users.models import User
from users.selectors.presence import forget_active_account_count
from users.services import feed


@receiver(post_save, sender=User)
def put_the_account_change_in_the_change_feed(sender, instance, raw=False, created=False, update_fields=None, **kwargs):
    if not raw:  # loaddata: fixtures bring their own presence_update_id
        feed.record_account_change(user=instance)
    # A login saves last_login alone: only a new account, or a save that may change
    # is_active, changes the count.
    if created or update_fields is None or "is_active" in update_fields:
        _forget_the_count_of_active_accounts()


@receiver(post_delete, sender=User)
def leave_a_tombstone_for_the_change_feed(sender, instance, **kwargs):
    feed.record_account_deleted(user_id=instance.pk)
    _forget_the_count_of_active_accounts()


def _forget_the_count_of_active_accounts():
    # Now, for what this transaction reads next, and after commit, since another request may
    # have counted (without this change) in between.
    forget_active_account_count()
    transaction.on_commit(forget_active_account_count)
