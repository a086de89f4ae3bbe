"""DRF's throttles, failing open when the cache (Redis) is unreachable, plus a per-username
limit for login.

Throttle counters live in the shared cache so that every gunicorn worker counts together.
When Redis is down, a throttle that raised would turn every request into a 500; refusing
every request would take the API down with Redis. Letting requests through unthrottled
keeps login, heartbeats and lists answering until Redis is back (docs/reliability.md).
After a failure the cache is left alone for CACHE_RETRY_SECONDS, so that a Redis that
hangs costs one socket timeout per process every few seconds, not one per request.
"""

import hashlib
import logging
import time

from django.core.cache import cache as default_cache
from rest_framework import throttling

from offchat_backend.log_events import log_event

logger = logging.getLogger(__name__)

CACHE_RETRY_SECONDS = 5.0

# time.monotonic() until which this process does not touch the cache for throttling.
_cache_unavailable_until = 0.0


class CacheUnavailableError(Exception):
    pass


class _GuardedCache:
    """The two cache calls DRF's throttles make, with any backend failure (redis-py raises
    its own ConnectionError and TimeoutError) turned into CacheUnavailableError, so that only
    cache failures, not a bad request body or a bug, let a request through."""

    def get(self, key, default=None):
        return self._call("get", key, default)

    def set(self, key, value, timeout):
        return self._call("set", key, value, timeout)

    @staticmethod
    def _call(method, *args):
        try:
            return getattr(default_cache, method)(*args)
        except Exception as failure:
            raise CacheUnavailableError(type(failure).__name__) from failure


class FailOpenMixin:
    cache = _GuardedCache()

    def allow_request(self, request, view):
        global _cache_unavailable_until
        if time.monotonic() < _cache_unavailable_until:
            return True
        try:
            return super().allow_request(request, view)
        except CacheUnavailableError as failure:
            _cache_unavailable_until = time.monotonic() + CACHE_RETRY_SECONDS
            log_event(
                logger,
                "throttle_cache_unavailable",
                level=logging.WARNING,
                error=str(failure),
                retry_in_s=CACHE_RETRY_SECONDS,
            )
            return True


class AnonRateThrottle(FailOpenMixin, throttling.AnonRateThrottle):
    """Per client address, for requests without a token."""


class UserRateThrottle(FailOpenMixin, throttling.UserRateThrottle):
    """Per user, for every authenticated request."""


class ScopedRateThrottle(FailOpenMixin, throttling.ScopedRateThrottle):
    """Per user (or address) and view scope: `login` per address, `heartbeat` per user."""


class LoginUsernameThrottle(FailOpenMixin, throttling.SimpleRateThrottle):
    """Login attempts per username, whatever address they come from: a guessing attack
    spread over many addresses still meets a limit. Usernames are compared case-folded, as
    a guesser could vary the case; the key holds a digest, never the name itself."""

    scope = "login_username"

    def get_cache_key(self, request, view):
        username = request.data.get("username") if hasattr(request.data, "get") else None
        if not isinstance(username, str) or not username:
            return None  # nothing to count against: the serializer rejects the request
        digest = hashlib.sha256(username.casefold().encode()).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": digest}
