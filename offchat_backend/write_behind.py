"""A per-process write-behind buffer: writes that may land a moment late, collected by the
requests of one process and written together by one thread.

A gunicorn worker answers one request at a time; a write its requests can defer costs it
nothing to queue here, and the thread writes a second's worth in one statement instead of
one statement each. The promise to callers: what is added is written within `interval`
seconds of the first addition since the last write (plus the write's own time), and at the
latest when the process exits normally (gunicorn's graceful stop, max-requests recycling,
a timeout's SIGABRT: each ends in sys.exit, which runs atexit). Only SIGKILL or a crash
loses the last interval's additions; the callers decide that this is acceptable for what
they add (users.services.presence: the next heartbeat writes again).
"""

import atexit
import logging
import os
import threading
from collections.abc import Callable, Hashable

from django.db import close_old_connections, connections

logger = logging.getLogger(__name__)


class WriteBehind:
    """Additions keyed by what they write: a second addition under one key within an
    interval replaces (`merge`s with) the first, so the buffer holds at most one entry per
    key and its size is bounded by the process's clients, however fast they call."""

    def __init__(self, *, name: str, write: Callable[[list], None], merge: Callable[[object, object], object]):
        self._name = name
        self._write = write
        self._merge = merge
        self._reset()
        # A process forked after the thread started (gunicorn --preload) has its parent's
        # entries and locks but not its thread: it starts empty and starts its own.
        os.register_at_fork(after_in_child=self._reset)
        atexit.register(self.close)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._added = threading.Condition(self._lock)
        self._writing = threading.Lock()  # the thread's write and close's, one at a time
        self._pending: dict[Hashable, object] = {}
        self._thread: threading.Thread | None = None
        self._closed = False
        self._interval = 0.0

    def add(self, key: Hashable, entry, *, interval: float) -> bool:
        """Queues `entry`; False, with nothing queued, once the process is exiting: the
        caller then writes it itself."""
        with self._lock:
            if self._closed:
                return False
            self._interval = interval
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"write-behind {self._name}", daemon=True)
                self._thread.start()
            if not self._pending:
                # Only the first addition since a write wakes the thread; the others would cost
                # every request a switch to it, for it to wait again.
                self._added.notify()
            earlier = self._pending.get(key)
            self._pending[key] = entry if earlier is None else self._merge(earlier, entry)
            return True

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def flush(self) -> int:
        """Writes what is pending now, in the calling thread; returns how many entries."""
        with self._writing:
            with self._lock:
                entries, self._pending = list(self._pending.values()), {}
            if entries:
                try:
                    self._write(entries)
                except Exception:
                    # The callers' own promise covers it (the module's docstring); the thread lives on.
                    logger.exception("event=write_behind_failed buffer=%s entries=%d", self._name, len(entries))
            return len(entries)

    def close(self) -> None:
        """At exit: no more additions (callers write themselves from now on), the rest written."""
        with self._lock:
            self._closed = True
            self._added.notify()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self.flush()

    def _run(self) -> None:
        try:
            while self._wait_for_the_next_write():
                # As Django does around a request: a connection past CONN_MAX_AGE, or broken (a
                # database restart), is replaced instead of failing every write from then on.
                close_old_connections()
                self.flush()
                close_old_connections()
        finally:
            connections.close_all()  # this thread's own

    def _wait_for_the_next_write(self) -> bool:
        """The first addition since the last write waits `interval` for the others; False once
        closing, when close() writes what is left itself."""
        with self._lock:
            while not self._pending and not self._closed:
                self._added.wait()
            return not self._added.wait_for(lambda: self._closed, timeout=self._interval)
