import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from offchat_backend.log_events import log_event
from users.services import history, presence

logger = logging.getLogger(__name__)


@shared_task(
    soft_time_limit=settings.PRESENCE_SWEEP_TIME_LIMIT,
    time_limit=settings.PRESENCE_SWEEP_TIME_LIMIT + 30,
)
def check_and_mark_offline_users() -> int:
    try:
        return presence.mark_inactive_users_offline()
    except SoftTimeLimitExceeded:
        # Past the limit in Python (the database bounds its own waits: the service). The
        # sweep's transaction rolled back: nothing is half applied, and the next sweep does
        # the work. Said once, as a warning, not as a crash.
        log_event(
            logger,
            "presence_sweep_timed_out",
            level=logging.WARNING,
            limit_s=settings.PRESENCE_SWEEP_TIME_LIMIT,
        )
        return 0


@shared_task(soft_time_limit=30, time_limit=60)
def record_presence_counts() -> None:
    """Users per status this minute: the timeline's points."""
    history.record_counts(at=timezone.now())


@shared_task(soft_time_limit=10 * 60, time_limit=15 * 60)
def prune_presence_history() -> None:
    """Intervals and per-minute counts older than PRESENCE_HISTORY_DAYS."""
    intervals, counts = history.prune(now=timezone.now())
    log_event(logger, "presence_history_pruned", intervals=intervals, counts=counts)


@shared_task(soft_time_limit=10 * 60, time_limit=15 * 60)
def flush_expired_tokens() -> None:
    """Expired refresh tokens can no longer be used: drop them from the blacklist tables."""
    call_command("flushexpiredtokens")
