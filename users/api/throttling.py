"""DRF's throttles counted in one Redis round trip, failing open when the cache (Redis) is
unreachable, plus a per-username limit for login.

Counting: a fixed window per key. Each throttle check is `INCRBY throttle:<scope>:<ident>:<window> 1`
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

The heartbeat's limit (HeartbeatRateThrottle) is counted in batches instead: each process
counts its requests per window in memory, answers from what it knows (the shared total as of
its last addition plus its own requests since), and adds its count to the shared one every
THROTTLE_HEARTBEAT_BATCH_INTERVAL seconds, all windows in one pipeline, from a thread of its
own (offchat_backend.write_behind). The heartbeat is the busiest endpoint, and the round trip
was most of what its throttle cost (bench/analysis.md, row 1b). The tradeoff, accepted for a
limit against runaway clients: one process refuses at once when its own requests reach the
limit; a client spread over several processes is refused within one interval of crossing it,
so that a window can let through at most the limit once per process. Refused requests count,
as above, so a loop that keeps calling stays refused.

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
import os
import threading
import time
import weakref
from dataclasses import dataclass

import redis
from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.redis import RedisCache
from rest_framework import throttling

from offchat_backend.log_events import log_event
from offchat_backend.write_behind import WriteBehind

logger = logging.getLogger(__name__)

CACHE_RETRY_SECONDS = 5.0

# time.monotonic() until which this process does not touch the cache for throttling.
_cache_unavailable_until = 0.0


class CacheUnavailableError(Exception):
    pass


def _leave_the_cache_alone(failure: "CacheUnavailableError") -> None:
    global _cache_unavailable_until
    _cache_unavailable_until = time.monotonic() + CACHE_RETRY_SECONDS
    log_event(
        logger,
        "throttle_cache_unavailable",
        level=logging.WARNING,
        error=str(failure),
        retry_in_s=CACHE_RETRY_SECONDS,
    )


class FailOpenMixin:
    def allow_request(self, request, view):
        if time.monotonic() < _cache_unavailable_until:
            return True
        try:
            return super().allow_request(request, view)
        except CacheUnavailableError as failure:
            _leave_the_cache_alone(failure)
            return True


class FixedWindowRateThrottle(throttling.SimpleRateThrottle):
    """DRF's SimpleRateThrottle (rates, scopes, get_cache_key) with a fixed-window counter in
    place of its sliding log. The public throttles below list it after DRF's class, so that it
    sits between that class and SimpleRateThrottle in the MRO: DRF's ScopedRateThrottle picks
    the view's scope and rate, then its super().allow_request() lands here, and isinstance
    checks against DRF's classes (HeartbeatView.get_throttles) still hold."""

    cache_format = "throttle:%(scope)s:%(ident)s"
    cache_alias = DEFAULT_CACHE_ALIAS

    def batch_interval(self) -> float:
        """Seconds between this process's additions to the shared count; 0 counts each
        request in the cache as it comes."""
        return 0.0

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
        interval = self.batch_interval()
        if interval > 0:
            count = BATCHED_COUNTS.count(
                cache_alias=self.cache_alias,
                key=self.key,
                window_seconds=self.duration,
                window_ends_at=self.window_ends_at,
                interval=interval,
            )
        else:
            count = count_request_in_window(cache=caches[self.cache_alias], key=self.key, window_seconds=self.duration)
        return count <= self.num_requests

    def wait(self):
        # Refused requests are counted too, but they never move the window's end.
        return max(1, math.ceil(self.window_ends_at - self.now))


def count_request_in_window(*, cache, key, window_seconds):
    """Counts one more request under `key` and answers how many the window holds now.
    Raises CacheUnavailableError when the cache cannot be reached."""
    [count] = add_to_windows(cache=cache, additions=[(key, 1, window_seconds)])
    return count


def add_to_windows(*, cache, additions):
    """Adds each (key, amount, window_seconds) to its window's count, in one round trip to
    Redis; answers the counts as they are now, in order. Raises CacheUnavailableError when the
    cache cannot be reached."""
    if isinstance(cache, RedisCache):
        return _add_in_redis(cache=cache, additions=additions)
    return [
        _add_with_cache_api(cache=cache, key=key, amount=amount, window_seconds=window_seconds)
        for key, amount, window_seconds in additions
    ]


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


def _add_in_redis(*, cache, additions):
    # A pipeline without MULTI: INCRBY is atomic on its own, and the commands still travel
    # in one round trip. The key's window index, not its TTL, ends the count, so whichever
    # request sets the TTL, it outlives the window; NX lets only the first request of the
    # window set it, so later ones are not writes to replicas and the AOF.
    pipeline = _redis_client(cache=cache).pipeline(transaction=False)
    for key, amount, window_seconds in additions:
        redis_key = cache.make_key(key)  # KEY_PREFIX and VERSION apply as to every other cache entry
        pipeline.incrby(redis_key, amount)
        pipeline.expire(redis_key, window_seconds, nx=True)
    try:
        replies = pipeline.execute()
    except redis.RedisError as failure:
        raise CacheUnavailableError(type(failure).__name__) from failure
    return replies[0::2]


def _add_with_cache_api(*, cache, key, amount, window_seconds):
    try:
        if cache.add(key, amount, window_seconds):
            return amount
        try:
            return cache.incr(key, amount)
        except ValueError:
            # Evicted, or expired as the window ended, between add and incr.
            cache.set(key, amount, window_seconds)
            return amount
    # Each backend raises its own errors (LocMem none, memcached and the database cache their
    # client's); only the cache calls are inside this try, so a bug elsewhere still raises.
    except Exception as failure:
        raise CacheUnavailableError(type(failure).__name__) from failure


@dataclass
class _WindowCount:
    cache_alias: str
    seconds: int
    ends_at: float
    known: int = 0  # the shared count when this process last added to it, its own additions included
    sending: int = 0  # this process's requests on their way to the shared count
    unsent: int = 0  # this process's requests since


class BatchedWindowCounts:
    """This process's counts per throttle window, added to the shared cache by a thread (the
    module's docstring: counted in batches)."""

    def __init__(self):
        self._reset()
        self._sender = WriteBehind(name="throttle counts", write=self._send, merge=lambda earlier, _later: earlier)
        os.register_at_fork(after_in_child=self._reset)  # a forked worker counts its own requests

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, _WindowCount] = {}

    def count(self, *, cache_alias: str, key: str, window_seconds: int, window_ends_at: float, interval: float) -> int:
        """Counts one more request under `key`; answers how many the window holds as far as
        this process knows."""
        with self._lock:
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = _WindowCount(
                    cache_alias=cache_alias, seconds=window_seconds, ends_at=window_ends_at
                )
            window.unsent += 1
            count = window.known + window.sending + window.unsent
        if not self._sender.add(key, key, interval=interval):
            self._send([key])  # the process is exiting: no thread to send it later
        return count

    def send_now(self) -> None:
        self._sender.flush()

    def close(self) -> None:
        """As at exit: what is unsent is sent, and later requests are sent as they come."""
        self._sender.close()

    def __len__(self) -> int:
        """How many windows this process keeps a count for."""
        with self._lock:
            return len(self._windows)

    def _send(self, keys: list[str]) -> None:
        batches: dict[str, list[tuple[str, int, int]]] = {}
        with self._lock:
            for key in keys:
                window = self._windows.get(key)
                if window is None or not window.unsent:
                    continue
                amount, window.unsent = window.unsent, 0
                window.sending += amount
                batches.setdefault(window.cache_alias, []).append((key, amount, window.seconds))
        for cache_alias, additions in batches.items():
            try:
                counts = add_to_windows(cache=caches[cache_alias], additions=additions)
            except CacheUnavailableError as failure:
                # Failing open, as a request's own check does: these requests are not counted.
                counts = [None] * len(additions)
                _leave_the_cache_alone(failure)
            with self._lock:
                for (key, amount, _), shared_count in zip(additions, counts, strict=True):
                    window = self._windows[key]
                    window.sending -= amount
                    if shared_count is not None:
                        window.known = max(window.known, shared_count)
        self._forget_ended_windows()

    def _forget_ended_windows(self) -> None:
        now = time.time()
        with self._lock:
            ended = [
                key
                for key, window in self._windows.items()
                if window.ends_at <= now and not (window.unsent or window.sending)
            ]
            for key in ended:
                del self._windows[key]


BATCHED_COUNTS = BatchedWindowCounts()


class AnonRateThrottle(FailOpenMixin, throttling.AnonRateThrottle, FixedWindowRateThrottle):
    """Per client address, for requests without a token."""


class UserRateThrottle(FailOpenMixin, throttling.UserRateThrottle, FixedWindowRateThrottle):
    """Per user, for every authenticated request."""


class ScopedRateThrottle(FailOpenMixin, throttling.ScopedRateThrottle, FixedWindowRateThrottle):
    """Per user (or address) and view scope: `login` per address, `heartbeat` per user."""


class HeartbeatRateThrottle(ScopedRateThrottle):
    """The heartbeat's per-user limit, counted in batches (the module's docstring)."""

    def batch_interval(self) -> float:
        return settings.THROTTLE_HEARTBEAT_BATCH_INTERVAL


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
