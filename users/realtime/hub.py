"""One hub per ASGI process: its open sockets, what each wants to hear, and the loop that
follows the change feed and pushes every change to the sockets interested in it.

Why the feed and not messages between processes: the HTTP change feed (users.selectors.feed)
is the source of truth. It already holds every write in commit order, the sweep's in the
Celery worker included, and finds the transitions the clock makes with no write at all. Each
process reads it once per PRESENCE_PUSH_INTERVAL, whatever its number of sockets, and fans
out locally: one delivery per interested socket, no per-member copies through Redis, nothing
lost when Redis restarts, and any number of processes see the same changes.

What a tick costs is set by the changes, not by the sockets: the sockets to push to are found
from the changed users (the staff sockets, and the subscribers of those users), and the indexes
that read needs (sessions by user, users following themselves) are kept as sockets come and
go, not rebuilt each tick. Only the idle check (every IDLE_CHECK_INTERVAL) visits every socket.
The touch of the held sessions is spread: every TOUCH_SLICE_INTERVAL a tick writes the share that
fell due, so that every session is written once per PRESENCE_WRITE_GRANULARITY and no tick writes
them all (10,000 sessions in one statement took ~0.5 s of CPU holding the GIL, and ~0.7 s in
PostgreSQL; a slice per tick would scan the sessions table 25 times as often).
"""

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from types import SimpleNamespace

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from offchat_backend.log_events import log_event
from users.api.serializers.lists import AdminUserSerializer, DirectoryUserSerializer
from users.exceptions import ResyncRequiredError
from users.models import PresenceSession
from users.selectors import accounts, feed
from users.selectors.sessions import ended_sessions, unusable_sessions
from users.services import presence

logger = logging.getLogger(__name__)

# Database work of sockets runs in a pool of threads, each with its own connection, not in
# Channels' single thread per process: a burst of connects (a server restart, a reconnect
# storm) is then bounded by the database, not by one thread.
in_db_thread = partial(database_sync_to_async, thread_sensitive=False)

# Who a row is computed for: staff see the truth, everyone else what privacy lets them see.
STAFF_VIEWER = SimpleNamespace(is_staff=True, pk=None)
PUBLIC_VIEWER = SimpleNamespace(is_staff=False, pk=None)
# How many changed users one read of the feed may bring; past it every socket resyncs.
FOLLOWER_MAX_CHANGES = 100_000
# Seconds one socket may take to accept its share of a batch.
SEND_TIMEOUT = 5.0
# Seconds between two checks for idle sockets (a visit of every socket), at most a tenth of
# PRESENCE_WS_IDLE_TIMEOUT (90 s: a check every 5 s).
IDLE_CHECK_INTERVAL = 5.0
# Seconds between two slices of the touch, at most a fifth of PRESENCE_WRITE_GRANULARITY (25 s:
# a fifth of the held sessions every 5 s).
TOUCH_SLICE_INTERVAL = 5.0


@dataclass(eq=False, slots=True)
class Listener:
    """One open, authenticated socket: whose session it holds and what it wants to hear."""

    socket: object  # users.realtime.consumers.PresenceConsumer
    session: PresenceSession
    is_staff: bool
    # Replaced, never changed in place: most sockets follow nobody and share the empty one.
    subscriptions: frozenset[int] = frozenset()
    # The last moment this process knew the socket alive: a frame from it, or a touch of its
    # session. A session is ended after the grace period only if nothing touched it since.
    alive_at: datetime = field(default_factory=timezone.now)
    session_id: str = field(init=False)
    user_id: int = field(init=False)

    def __post_init__(self):
        self.session_id, self.user_id = str(self.session.pk), self.session.user_id


@dataclass
class Batch:
    """What one read of the feed found, rows computed once for all sockets."""

    cursor: feed.Cursor
    # Where the read started: a frame that carries part of the batch carries this cursor.
    since: feed.Cursor | None = None
    staff_rows: dict[int, dict] = field(default_factory=dict)
    public_rows: dict[int, dict] = field(default_factory=dict)
    own_rows: dict[int, dict] = field(default_factory=dict)
    removed: list[int] = field(default_factory=list)
    unusable_sessions: set[str] = field(default_factory=set)
    resync: bool = False


def rows_for(users, *, viewer, now) -> dict[int, dict]:
    """The users as the lists show them to `viewer` (staff: the admin rows; others: the
    directory's, with privacy applied)."""
    serializer_class = AdminUserSerializer if viewer.is_staff else DirectoryUserSerializer
    context = {"request": SimpleNamespace(user=viewer), "presence_now": now}
    return {row["id"]: row for row in serializer_class(users, many=True, context=context).data}


def read_batch(*, cursor: feed.Cursor, now: datetime, owned: dict[int, set[str]], self_subscribed: set[int]) -> Batch:
    """Runs in a worker thread: the changes since `cursor`, their rows for staff, for other
    users and for themselves, and which of the changed users' local sessions died."""
    try:
        changes = feed.changes_since(
            queryset=accounts.users_for_admin(), cursor=cursor, now=now, limit=FOLLOWER_MAX_CHANGES
        )
    except ResyncRequiredError:
        return Batch(cursor=feed.current_cursor(now=now), resync=True)
    changed_owners = {user.pk for user in changes.users} | set(changes.removed_ids)
    local = {sid for user_id in changed_owners & owned.keys() for sid in owned[user_id]}
    revived = _revive_held_sessions(session_ids=local, now=now)
    if revived:
        reloaded = {user.pk: user for user in accounts.users_for_admin().filter(pk__in=revived)}
        changes.users[:] = [reloaded.get(user.pk, user) for user in changes.users]
    active = [user for user in changes.users if user.is_active]
    gone = [user.pk for user in changes.users if not user.is_active] + list(changes.removed_ids)
    batch = Batch(
        cursor=changes.cursor,
        staff_rows=rows_for(active, viewer=STAFF_VIEWER, now=now),
        public_rows=rows_for(active, viewer=PUBLIC_VIEWER, now=now),
        removed=sorted(gone),
    )
    for user in active:
        if user.pk in self_subscribed:
            own_viewer = SimpleNamespace(is_staff=False, pk=user.pk)
            batch.own_rows.update(rows_for([user], viewer=own_viewer, now=now))
    if local:
        batch.unusable_sessions = unusable_sessions(session_ids=local)
    return batch


def _revive_held_sessions(*, session_ids, now) -> set[int]:
    """Sessions this process holds a socket of, which another process (or the sweep) ended
    meanwhile: a socket of the session closed there after this one opened (two tabs of one
    session on two processes). Revived before any row is computed, so nobody here is told
    the user went offline. Returns the users revived."""
    revived = set()
    for session in ended_sessions(session_ids=session_ids) if session_ids else ():
        presence.connect_session(session=session, at=now)
        revived.add(session.user_id)
    return revived


class TooManySockets(Exception):
    """The user holds PRESENCE_WS_MAX_SOCKETS_PER_USER sockets in this process already."""


class Hub:
    def __init__(self):
        self._reset()

    def _reset(self):
        self.listeners: set[Listener] = set()
        # Tuples, not sets: a session has one socket or a few (tabs), and a socket's share of
        # the process's memory is the bound on how many one process holds.
        self.by_session: dict[str, tuple[Listener, ...]] = {}
        self.staff: set[Listener] = set()
        self.subscribers: dict[int, set[Listener]] = {}
        # Kept as sockets come and go, for the feed's read: each user's sessions held here,
        # and how many of a user's own (non-staff) sockets follow that user.
        self.sessions_of_user: dict[int, tuple[str, ...]] = {}
        self.self_subscribed: dict[int, int] = {}
        # Each user's sockets here, held or joining: what PRESENCE_WS_MAX_SOCKETS_PER_USER caps.
        self.sockets_of_user: dict[int, int] = {}
        # What was last pushed of each user, as digests of (staff row, public row), so that a
        # change that shows nothing new (or nothing at all to non-staff: a hidden user) pushes
        # nothing. Digests, not rows: one entry per user who ever changed, for the process's life.
        self.last_pushed: dict[int, tuple[int | None, int | None]] = {}
        self.cursor: feed.Cursor | None = None
        self.grace_timers: dict[str, asyncio.Task] = {}
        # The touch, spread over the ticks: held sessions in the order they are written (each
        # goes back to the end when written), and how many fell due and are not written yet.
        self.touch_queue: deque[str] = deque()
        self.touch_due = 0.0
        self.last_touch = time.monotonic()
        self.last_idle_check = time.monotonic()
        self.follower: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pushes_sent = 0  # socket deliveries, for /metrics

    # --- Sockets come and go -----------------------------------------------------------
    async def join(self, listener: Listener) -> feed.Cursor:
        """Register an authenticated socket; returns the cursor its pushes start after. Raises
        TooManySockets, having written nothing, when its user's sockets here are at the cap."""
        if self.loop is not asyncio.get_running_loop():  # a new event loop (tests): start over
            self._reset()
            self.loop = asyncio.get_running_loop()
        # The slot is taken before the first await: of two sockets joining at once, one gets the
        # last slot. Given back if the join fails, or when the socket leaves.
        self._take_slot(listener.user_id)
        try:
            self._stop_grace(listener.session_id)
            listener.alive_at = timezone.now()
            await in_db_thread(presence.connect_session)(session=listener.session, at=listener.alive_at)
            if self.cursor is None:
                self.cursor = await in_db_thread(feed.current_cursor)(now=timezone.now())
        except BaseException:
            self._free_slot(listener.user_id)
            raise
        # Another socket of the session may have closed meanwhile, and started a grace period.
        self._stop_grace(listener.session_id)
        if not self.listeners:
            self.last_touch, self.touch_due = time.monotonic(), 0.0
        self.hold(listener)
        if self.follower is None or self.follower.done():
            self.follower = asyncio.create_task(self._follow())
        return self.cursor

    def hold(self, listener: Listener) -> None:
        """The bookkeeping of a socket that joined: the indexes the touch, the feed's read and
        the pushes use."""
        self.listeners.add(listener)
        if listener.session_id not in self.by_session:
            self.touch_queue.append(listener.session_id)  # connected just now: due a window later
        self.by_session[listener.session_id] = (*self.by_session.get(listener.session_id, ()), listener)
        sessions = self.sessions_of_user.get(listener.user_id, ())
        if listener.session_id not in sessions:
            self.sessions_of_user[listener.user_id] = (*sessions, listener.session_id)
        if listener.is_staff:
            self.staff.add(listener)

    def _take_slot(self, user_id: int) -> None:
        held = self.sockets_of_user.get(user_id, 0)
        if held >= settings.PRESENCE_WS_MAX_SOCKETS_PER_USER:
            raise TooManySockets
        self.sockets_of_user[user_id] = held + 1

    def _free_slot(self, user_id: int) -> None:
        left = self.sockets_of_user.get(user_id, 0) - 1
        if left > 0:
            self.sockets_of_user[user_id] = left
        else:
            self.sockets_of_user.pop(user_id, None)

    def leave(self, listener: Listener, *, closed_by_client: bool = False) -> None:
        """A socket is gone. A close the client sent is a sign of life at that moment; a socket
        found dead (idle, too slow, a dropped connection) was last alive at `alive_at`."""
        if listener not in self.listeners:
            return
        if closed_by_client:
            listener.alive_at = timezone.now()
        self.listeners.discard(listener)
        self._free_slot(listener.user_id)
        self.staff.discard(listener)
        self.unsubscribe(listener, set(listener.subscriptions))
        same_session = tuple(other for other in self.by_session.get(listener.session_id, ()) if other is not listener)
        if same_session:
            self.by_session[listener.session_id] = same_session
        else:
            self.by_session.pop(listener.session_id, None)
            sessions = tuple(
                sid for sid in self.sessions_of_user.get(listener.user_id, ()) if sid != listener.session_id
            )
            if sessions:
                self.sessions_of_user[listener.user_id] = sessions
            else:
                self.sessions_of_user.pop(listener.user_id, None)
            if listener.session.revoked_at is None:
                self._stop_grace(listener.session_id)
                self.grace_timers[listener.session_id] = asyncio.create_task(
                    self._end_after_grace(listener.session, closed_at=listener.alive_at)
                )

    async def _end_after_grace(self, session: PresenceSession, *, closed_at) -> None:
        """A reload or a blip reconnects within the grace period and nothing flaps."""
        try:
            await asyncio.sleep(settings.PRESENCE_DISCONNECT_GRACE)
            if str(session.pk) not in self.by_session:
                await in_db_thread(presence.end_closed_session)(session=session, closed_at=closed_at)
        finally:
            if self.grace_timers.get(str(session.pk)) is asyncio.current_task():  # not a later one's
                del self.grace_timers[str(session.pk)]

    def _stop_grace(self, session_id: str) -> None:
        timer = self.grace_timers.pop(session_id, None)
        if timer:
            timer.cancel()

    def subscribe(self, listener: Listener, user_ids: set[int]) -> None:
        if not listener.is_staff and listener.user_id in user_ids - listener.subscriptions:
            self.self_subscribed[listener.user_id] = self.self_subscribed.get(listener.user_id, 0) + 1
        listener.subscriptions = listener.subscriptions | user_ids
        for user_id in user_ids:
            self.subscribers.setdefault(user_id, set()).add(listener)

    def unsubscribe(self, listener: Listener, user_ids: set[int]) -> None:
        if not listener.is_staff and listener.user_id in user_ids & listener.subscriptions:
            left = self.self_subscribed.get(listener.user_id, 0) - 1
            if left > 0:
                self.self_subscribed[listener.user_id] = left
            else:
                self.self_subscribed.pop(listener.user_id, None)
        listener.subscriptions = listener.subscriptions - user_ids
        for user_id in user_ids:
            listeners = self.subscribers.get(user_id)
            if listeners:
                listeners.discard(listener)
                if not listeners:
                    del self.subscribers[user_id]

    def remember_public_rows(self, rows: dict[int, dict]) -> None:
        """A subscriber was just sent these rows: later pushes compare with them when nothing
        was pushed of those users yet (so a hidden user's first change tells nothing)."""
        for user_id, row in rows.items():
            staff_digest, public_digest = self.last_pushed.get(user_id, (None, None))
            if public_digest is None:
                self.last_pushed[user_id] = (staff_digest, _digest(row))

    # --- The follower --------------------------------------------------------------------
    async def _follow(self) -> None:
        while self.listeners or self.grace_timers:
            started = time.monotonic()
            try:
                await self._tick()
            except Exception:  # a database outage: keep the sockets, try again next tick
                logger.exception("event=presence_push_failed")
            await asyncio.sleep(max(0.0, settings.PRESENCE_PUSH_INTERVAL - (time.monotonic() - started)))
        # Nobody listens: the next socket starts from the feed as it is then.
        self.cursor = None

    async def _tick(self) -> None:
        if not self.listeners:
            return
        idle_timeout = settings.PRESENCE_WS_IDLE_TIMEOUT
        if time.monotonic() - self.last_idle_check >= min(IDLE_CHECK_INTERVAL, idle_timeout / 10):
            self.last_idle_check = time.monotonic()
            idle = [lst for lst in self.listeners if lst.socket.idle_for() > idle_timeout]
            for listener in idle:
                await listener.socket.close_idle()
        await self._touch_due_sessions()
        # Copies (made in C, no visit of each socket in Python): the read runs in another thread
        # while sockets come and go here. The values are tuples, replaced and never changed.
        since = self.cursor
        batch = await in_db_thread(read_batch)(
            cursor=since,
            now=timezone.now(),
            owned=dict(self.sessions_of_user),
            self_subscribed=set(self.self_subscribed),
        )
        self.cursor, batch.since = batch.cursor, since
        await self._push(batch)

    async def _touch_due_sessions(self) -> None:
        """Write the share of the held sessions that fell due since the last slice: all of them
        once per PRESENCE_WRITE_GRANULARITY, in one statement per slice."""
        now, window = time.monotonic(), max(settings.PRESENCE_WRITE_GRANULARITY, 0.001)
        if now - self.last_touch < min(TOUCH_SLICE_INTERVAL, window / 5):
            return
        held = len(self.by_session)
        self.touch_due = min(float(held), self.touch_due + held * (now - self.last_touch) / window)
        self.last_touch = now
        chunk: dict[str, None] = {}
        for _ in range(len(self.touch_queue)):
            if len(chunk) >= int(self.touch_due):
                break
            session_id = self.touch_queue.popleft()
            if session_id in self.by_session and session_id not in chunk:  # else: gone, or a duplicate
                chunk[session_id] = None
                self.touch_queue.append(session_id)
        if not chunk:
            return
        self.touch_due -= len(chunk)
        touched_at = timezone.now()
        await in_db_thread(presence.touch_sessions)(session_ids=list(chunk), at=touched_at)
        for session_id in chunk:
            for listener in self.by_session.get(session_id, ()):
                listener.alive_at = max(listener.alive_at, touched_at)

    async def _push(self, batch: Batch) -> None:
        if batch.resync:
            log_event(logger, "presence_push_resync", level=logging.WARNING, sockets=len(self.listeners))
            await asyncio.gather(*(lst.socket.send_resync_required() for lst in list(self.listeners)))
            return
        for session_id in batch.unusable_sessions:
            for listener in list(self.by_session.get(session_id, ())):
                listener.session.revoked_at = listener.session.revoked_at or timezone.now()
                await listener.socket.close_for_revocation()
        staff_changed, public_changed = self._what_changed(batch)
        sends = [
            self._deliver(listener, rows=rows, removed=removed, cursor=batch.cursor, since=batch.since)
            for listener, (rows, removed) in self._shares(batch, staff_changed, public_changed).items()
            if rows or removed
        ]
        self.pushes_sent += len(sends)
        await asyncio.gather(*sends)

    def _shares(
        self, batch: Batch, staff_changed: set[int], public_changed: set[int]
    ) -> dict[Listener, tuple[list[dict], list[int]]]:
        """Each socket's share of a batch: the rows and removed ids it hears, in user id order.
        Staff sockets hear every staff row that changed; any other socket the users it follows
        (its own row, when it follows itself, as its user sees it)."""
        shares = {}
        if staff_changed or batch.removed:
            staff_rows = [batch.staff_rows[user_id] for user_id in sorted(staff_changed)]
            for listener in self.staff:
                shares[listener] = (staff_rows, list(batch.removed))
        removed = set(batch.removed)
        for user_id in sorted(public_changed | batch.own_rows.keys() | removed):
            for listener in self.subscribers.get(user_id, ()):
                if listener.is_staff:
                    continue
                rows, gone = shares.setdefault(listener, ([], []))
                if user_id in removed:
                    gone.append(user_id)
                elif user_id == listener.user_id and user_id in batch.own_rows:
                    rows.append(batch.own_rows[user_id])
                elif user_id in public_changed:
                    rows.append(batch.public_rows[user_id])
        return shares

    @staticmethod
    async def _deliver(listener: Listener, **batch) -> None:
        """One socket's share of a batch. A client that does not take it in time is closed
        rather than allowed to hold every other socket's next push back; a send that fails
        (the socket closed meanwhile) fails for that socket alone."""
        try:
            await asyncio.wait_for(listener.socket.send_changes(**batch), timeout=SEND_TIMEOUT)
        except TimeoutError:
            log_event(logger, "socket_too_slow", level=logging.WARNING, session_id=listener.session_id)
            await listener.socket.close_too_slow()
        except Exception as failed:  # noqa: BLE001 (one socket's failure is not the batch's)
            log_event(
                logger, "socket_push_failed", level=logging.WARNING, session_id=listener.session_id, error=repr(failed)
            )

    def _what_changed(self, batch: Batch) -> tuple[set[int], set[int]]:
        staff_changed, public_changed = set(), set()
        for user_id, staff_row in batch.staff_rows.items():
            last_staff, last_public = self.last_pushed.get(user_id, (None, None))
            public_row = batch.public_rows.get(user_id)
            staff_digest = _digest(staff_row)
            public_digest = _digest(public_row) if public_row is not None else last_public
            if staff_digest != last_staff:
                staff_changed.add(user_id)
            if public_row is not None and public_digest != last_public:
                public_changed.add(user_id)
            self.last_pushed[user_id] = (staff_digest, public_digest)
        for user_id in batch.removed:
            self.last_pushed.pop(user_id, None)
        return staff_changed, public_changed


def _digest(row: dict) -> int:
    """A row's identity for "did it change": equal rows give equal digests in this process."""
    return hash(json.dumps(row, sort_keys=True, separators=(",", ":"), default=str))


HUB = Hub()


def snapshot_rows(*, user_ids, viewer_id: int, is_staff: bool) -> tuple[dict[int, dict], datetime]:
    """The current rows of these (active) users as `viewer_id` sees them, and the moment
    they show: what a socket is sent when it subscribes. Runs in a worker thread."""
    now = timezone.now()
    users = list(accounts.users_for_admin().filter(pk__in=user_ids, is_active=True))
    viewer = STAFF_VIEWER if is_staff else SimpleNamespace(is_staff=False, pk=viewer_id)
    return rows_for(users, viewer=viewer, now=now), now
