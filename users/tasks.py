from celery import shared_task
from django.core.management import call_command

from users.services import presence


@shared_task
def check_and_mark_offline_users() -> int:
    return presence.mark_inactive_users_offline()


@shared_task
def flush_expired_tokens() -> None:
    """Expired refresh tokens can no longer be used: drop them from the blacklist tables."""
    call_command("flushexpiredtokens")
