"""DRF's throttles counted in one Redis round trip, failing open when the cache (Redis) is
unreachable, plus a per-username limit for login.

Counting: a fixed window per key. Each throttle check is `INCR throttle:<scope>:<ident>:<window>`
and `EXPIRE … NX` sent together in one pipeline: one round trip and no pickling, where DRF's
sliding log reads a pickled list of timestamps and writes it back (two round trips, a list as
long as the rate). The window is `time.time() // duration`, so every worker agrees on it without
asking Redis (as far as their clocks agree: NTP's milliseconds). The tradeoff, accepted: a
client can make up to 2x the rate across a window boundary (the limit at the end of one window,
again at the start of the next), where DRF's log is exact. For limits against runaway clients
and password guessing that is enough. A refused request's Retry-After is the time left in its
window.
EXPIRE's NX option needs Redis 7 (docker-compose runs redis:7); an older one answers an error,
and throttling would fail open, with a warning every CACHE_RETRY_SECONDS.

When the cache is not Redis (LocMem in a run without services, or in tests on SQLite), the same
window is counted through Django's cache API, `add` then `incr`: atomic within one process,
which is all LocMem is shared by.

Throttle counters live in the shared cache so that every gunicorn worker counts together.
When Redis is down, a throttle that raised would turn every request into a 500; refusing
every request would take the API down with Redis. Letting requests through unthrottled
keeps login, heartbeats and lists answering until Redis is back (docs/reliability.md).
After a failure the cache is left alone for CACHE_RETRY_SECONDS, so that a Redis that
hangs costs one socket timeout per process every few seconds, not one per request. Only the
cache's failures (redis-py's RedisError, with the built-in Redis backend) let a request
through; a bug raises as anywhere else.
"""

import hashlib
import logging
import math
import time
import weakref

import redis
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.redis import RedisCache
from rest_framework import throttling

from offchat_backend.log_events import log_event

logger = logging.getLogger(__name__)

CACHE_RETRY_SECONDS = 5.0

# time.monotonic() until which this process does not touch the cache for throttling.
_cache_unavailable_until = 0.0


class CacheUnavailableError(Exception):
    pass


class FailOpenMixin:
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


class FixedWindowRateThrottle(throttling.SimpleRateThrottle):
    """DRF's SimpleRateThrottle (rates, scopes, get_cache_key) with a fixed-window counter in
    place of its sliding log. The public throttles below list it after DRF's class, so that it
    sits between that class and SimpleRateThrottle in the MRO: DRF's ScopedRateThrottle picks
    the view's scope and rate, then its super().allow_request() lands here, and isinstance
    checks against DRF's classes (HeartbeatView.get_throttles) still hold."""

    cache_format = "throttle:%(scope)s:%(ident)s"
    cache_alias = DEFAULT_CACHE_ALIAS

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        self.now = self.timer()
        window_index = int(self.now // self.duration)
        self.window_ends_at = (window_index + 1) * self.duration
        self.key = f"{key}:{window_index}"
        count = count_request_in_window(cache=caches[self.cache_alias], key=self.key, window_seconds=self.duration)
        return count <= self.num_requests

    def wait(self):
        # Refused requests are counted too, but they never move the window's end.
        return max(1, math.ceil(self.window_ends_at - self.now))


def count_request_in_window(*, cache, key, window_seconds):
    """Counts one more request under `key` and answers how many the window holds now.
    Raises CacheUnavailableError when the cache cannot be reached."""
    if isinstance(cache, RedisCache):
        return _count_in_redis(cache=cache, key=key, window_seconds=window_seconds)
    return _count_with_cache_api(cache=cache, key=key, window_seconds=window_seconds)


# Django's RedisCache makes a new redis-py client for every call, and redis-py's constructor
# builds a table of ~170 response callbacks: about 0.25 ms here, more than a round trip to a
# local Redis. One client per Django cache client instead (each thread has its own, as
# `caches` is per thread), over that cache's own connection pool.
_redis_clients = weakref.WeakKeyDictionary()


def _redis_client(*, cache):
    cache_client = cache._cache
    try:
        return _redis_clients[cache_client]
    except KeyError:
        # The built-in client writes every key to its first server, so one client serves all keys.
        return _redis_clients.setdefault(cache_client, cache_client.get_client(write=True))


def _count_in_redis(*, cache, key, window_seconds):
    # KEY_PREFIX and VERSION apply as to every other cache entry.
    redis_key = cache.make_key(key)
    # A pipeline without MULTI: INCR is atomic on its own, and the two commands still travel
    # in one round trip. The key's window index, not its TTL, ends the count, so whichever
    # request sets the TTL, it outlives the window; NX lets only the first request of the
    # window set it, so later ones are not writes to replicas and the AOF.
    pipeline = _redis_client(cache=cache).pipeline(transaction=False)
    try:
        pipeline.incr(redis_key)
        pipeline.expire(redis_key, window_seconds, nx=True)
        count, _ = pipeline.execute()
    except redis.RedisError as failure:
        raise CacheUnavailableError(type(failure).__name__) from failure
    return count


def _count_with_cache_api(*, cache, key, window_seconds):
    try:
        if cache.add(key, 1, window_seconds):
            return 1
        try:
            return cache.incr(key)
        except ValueError:
            # Evicted, or expired as the window ended, between add and incr.
            cache.set(key, 1, window_seconds)
            return 1
    # Each backend raises its own errors (LocMem none, memcached and the database cache their
    # client's); only the cache calls are inside this try, so a bug elsewhere still raises.
    except Exception as failure:
        raise CacheUnavailableError(type(failure).__name__) from failure


class AnonRateThrottle(FailOpenMixin, throttling.AnonRateThrottle, FixedWindowRateThrottle):
    """Per client address, for requests without a token."""


class UserRateThrottle(FailOpenMixin, throttling.UserRateThrottle, FixedWindowRateThrottle):
    """Per user, for every authenticated request."""


class ScopedRateThrottle(FailOpenMixin, throttling.ScopedRateThrottle, FixedWindowRateThrottle):
    """Per user (or address) and view scope: `login` per address, `heartbeat` per user."""


class LoginUsernameThrottle(FailOpenMixin, FixedWindowRateThrottle):
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


class PasswordChangeThrottle(FailOpenMixin, FixedWindowRateThrottle):
    """Password changes per user, over all their devices. Only requests that carry
    `current_password` count: reading and renaming the profile are not slowed."""

    scope = "password_change"

    def get_cache_key(self, request, view):
        if not (hasattr(request.data, "keys") and "current_password" in request.data):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.user.pk}
