from celery import shared_task
from django.conf import settings
from django.core.management import call_command

from users.services import presence


# A sweep still running when the next is due is overtaken: the next one skips while it holds
# the sweep's lock. Past its interval it is stopped (its transaction rolls back, nothing half
# applied) and the next sweep does the work; the hard limit ends a worker stuck in a call
# that ignores the soft one.
@shared_task(soft_time_limit=settings.PRESENCE_SWEEP_INTERVAL, time_limit=settings.PRESENCE_SWEEP_INTERVAL + 30)
def check_and_mark_offline_users() -> int:
    return presence.mark_inactive_users_offline()


@shared_task(soft_time_limit=10 * 60, time_limit=15 * 60)
def flush_expired_tokens() -> None:
    """Expired refresh tokens can no longer be used: drop them from the blacklist tables."""
    call_command("flushexpiredtokens")
