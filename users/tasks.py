import logging

from celery import shared_task
from django.core.management import call_command

from users.services import presence

logger = logging.getLogger(__name__)


@shared_task
def check_and_mark_offline_users() -> int:
    changed = presence.mark_inactive_users_offline()
    logger.info("event=presence_sweep users_marked_offline=%d", changed)
    return changed


@shared_task
def flush_expired_tokens() -> None:
    """Expired refresh tokens can no longer be used: drop them from the blacklist tables."""
    call_command("flushexpiredtokens")
