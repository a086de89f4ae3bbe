from django.db.models.signals import post_delete
from django.dispatch import receiver

from users.models import User
from users.services import presence


@receiver(post_delete, sender=User)
def leave_a_tombstone_for_the_change_feed(sender, instance, **kwargs):
    presence.record_account_deleted(user_id=instance.pk)
