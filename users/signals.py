"""Account changes made anywhere (the Django admin, createsuperuser, a password change)
reach the change feed, in the transaction that made them (User.save is atomic)."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from users.models import User
from users.services import feed


@receiver(post_save, sender=User)
def put_the_account_change_in_the_change_feed(sender, instance, raw=False, **kwargs):
    if raw:  # loaddata: fixtures bring their own presence_update_id
        return
    feed.record_account_change(user=instance)


@receiver(post_delete, sender=User)
def leave_a_tombstone_for_the_change_feed(sender, instance, **kwargs):
    feed.record_account_deleted(user_id=instance.pk)
