"""The shared cache (Redis) where it only saves work: the change feed's read of the clock's
crossings, the count of active accounts, the timeline's settled hours. When the cache fails,
callers get None and do the work themselves; the failure is logged once, and the cache is left
alone for RETRY_SECONDS in this process, so that a Redis that hangs costs one socket timeout
per process every few seconds, not one per request. (Throttling keeps its own counters and
pause: users.api.throttling.)"""

import logging
import time

from django.core.cache import cache

from offchat_backend.log_events import log_event

logger = logging.getLogger(__name__)

RETRY_SECONDS = 5.0

_unavailable_until = 0.0  # time.monotonic() until which this process leaves the cache alone


def call(method: str, *args, purpose: str, **kwargs):
    """`cache.<method>(*args, **kwargs)`, or None while the cache is failing. `purpose` names the
    log event: `<purpose>_cache_unavailable`."""
    global _unavailable_until
    if time.monotonic() < _unavailable_until:
        return None
    try:
        return getattr(cache, method)(*args, **kwargs)
    except Exception as failure:  # redis-py's ConnectionError and TimeoutError, whatever the client
        _unavailable_until = time.monotonic() + RETRY_SECONDS
        log_event(
            logger,
            f"{purpose}_cache_unavailable",
            level=logging.WARNING,
            error=type(failure).__name__,
            retry_in_s=RETRY_SECONDS,
        )
        return None


def trust_again() -> None:
    """Forget a failure (tests, which break and mend the cache on purpose)."""
    global _unavailable_until
    _unavailable_until = 0.0
