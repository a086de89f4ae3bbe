"""The presence socket, /ws/presence/: the open socket is the session (docs/realtime.md)."""

import asyncio
import json
import logging
import time
from datetime import datetime
from types import SimpleNamespace
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone

from offchat_backend.errors import DomainError
from offchat_backend.log_events import log_event
from users.models import ReportedStatus
from users.presence_rules import effective_status
from users.realtime.hub import HUB, Listener, TooManySockets, in_db_thread, rows_for, snapshot_rows
from users.selectors import accounts, feed
from users.selectors.sessions import session_of_access_token
from users.services import presence

logger = logging.getLogger(__name__)

SUBPROTOCOL = "offchat.presence"
TOKEN_SUBPROTOCOL_PREFIX = "token."
MAX_FRAME_BYTES = 16 * 1024
# Rows in one pushed `presence` frame (~200 bytes each): a batch of more (a mass transition: a
# sweep, a restart's timeouts) goes in several frames, each under the server's 1 MiB message limit.
ROWS_PER_FRAME = 1000
# Flood control: a bucket of FRAME_BURST frames, refilled at FRAME_RATE per second. A frame
# answered with rows (subscribe, resume) also costs a frame per ROWS_PER_FRAME_COST rows sent, paid
# after: a flood of subscribes of 400 users was answered with ~9,500 rows a socket, in the
# server's memory until the client read them (drill 15), ~2,500 now.
FRAME_BURST, FRAME_RATE = 30, 2.0
ROWS_PER_FRAME_COST = 100


class CloseCode:
    """Close codes (docs/realtime.md), in the range applications own. Before closing, the
    server sends an error frame with the precise code (not every ASGI server passes a close
    reason on: daphne drops it)."""

    UNAUTHORIZED = 4401  # bad, expired or revoked token; logged out; deactivated
    AUTH_TIMEOUT = 4408  # no auth frame in time, or no frame at all for too long
    NOT_FOUND = 4404  # no socket at this path (routing's catch-all)
    TOO_BIG = 4413  # a frame over MAX_FRAME_BYTES
    # "Too many", of frames or of the user's sockets: the error frame says which.
    TOO_MANY_FRAMES = 4429
    TOO_MANY_SOCKETS = 4429


# A close the client sent (a tab closed, a page left); anything else is a connection found dead.
CLEAN_CLOSES = frozenset({1000, 1001})

CLOSE_DETAILS = {
    "token_not_valid": "The token is invalid or expired: refresh it and connect again.",
    "session_not_found": "The token's session does not exist: log in again.",
    "session_revoked": "This session was logged out or ended: log in again.",
    "user_inactive": "This account is deactivated.",
    "auth_timeout": 'No {"type": "auth", "token": ...} frame in time.',
    "idle": "No frame for too long: ping every heartbeat interval.",
    "too_slow": "The client did not take pushed frames in time.",
    "frame_too_big": f"Frames are at most {MAX_FRAME_BYTES} bytes.",
    "too_many_frames": (
        f"At most {FRAME_BURST} frames at once, {FRAME_RATE:g} a second after that; "
        f"an answer costs a frame more per {ROWS_PER_FRAME_COST} rows."
    ),
    "too_many_sockets": "This user has as many sockets open on this server as a user may: close one first.",
    "not_found": "No socket at this path: the presence socket is /ws/presence/.",
}
# Of a path no route serves, the part logged: the client chooses it, and the log keeps a line.
LOGGED_PATH_CHARS = 200


class FramedConsumer(AsyncWebsocketConsumer):
    """JSON frames, and the close the clients read: an error frame saying why, then the code.

    Nothing is sent once the server closes the socket: daphne raises on a send to a closing
    socket, and a flood leaves frames queued behind the one that closed it (the client sent
    them before it read the close): each ended the consumer with a traceback."""

    closing = False

    async def _error(self, code: str, detail: str):
        await self._send({"type": "error", "code": code, "detail": detail})

    async def _send(self, frame: dict):
        if not self.closing:
            await self.send(text_data=json.dumps(frame, separators=(",", ":"), default=str))

    async def _close(self, code: int, reason: str):
        if not self.closing:
            await self._error(reason, CLOSE_DETAILS[reason])
            self.closing = True
            await self.close(code=code, reason=reason)


class UnknownPathConsumer(FramedConsumer):
    """Every WebSocket path no other route serves (`/ws/chat/`, `/ws/`): accepted and closed
    4404 with one INFO line. Without it Channels raised "No route found": daphne answered 500
    and logged a traceback, again at every retry of a client pointed at the wrong URL. Accepted
    rather than refused at the handshake: a browser shows a refused handshake as 1006, like a
    network failure, while 4404 tells the client its URL is wrong."""

    async def connect(self):
        log_event(logger, "socket_not_found", path=self.scope["path"][:LOGGED_PATH_CHARS])
        await self.accept(SUBPROTOCOL if SUBPROTOCOL in (self.scope.get("subprotocols") or []) else None)
        await self._close(CloseCode.NOT_FOUND, "not_found")


class PresenceConsumer(FramedConsumer):
    listener: Listener | None = None
    groups = ()  # no channel layer groups (and no empty list per socket)

    # --- The message loop ------------------------------------------------------------------
    # Channels' own loop, less what this consumer never uses and every frame paid for: a task
    # per message awaited (await_many_dispatch) and a hop to the sync thread per message to close
    # stale database connections (aclose_old_connections). This consumer uses no channel layer
    # (the hub fans out in-process) and does all its database work through in_db_thread, which
    # closes stale connections in the thread that runs it. A ping costs a few microseconds of
    # the event loop, and nothing else.
    async def __call__(self, scope, receive, send):
        self.scope, self.channel_layer, self.base_send = scope, None, send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass

    async def dispatch(self, message):
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message):
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def connect(self):
        # Until it authenticates a socket holds this and a timer, nothing else (docs/reliability.md,
        # drill 12: sockets held silent).
        self.tokens, self.refilled = float(FRAME_BURST), time.monotonic()
        self.last_frame = time.monotonic()
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        offered = self.scope.get("subprotocols") or []
        token = next(
            (p.removeprefix(TOKEN_SUBPROTOCOL_PREFIX) for p in offered if p.startswith(TOKEN_SUBPROTOCOL_PREFIX)),
            None,
        ) or next(iter(query.get("token", [])), None)
        await self.accept(SUBPROTOCOL if SUBPROTOCOL in offered else None)
        self.resume_from = next(iter(query.get("cursor", [])), None)
        if token:
            await self._authenticate(token)
        else:
            self.auth_deadline = asyncio.get_running_loop().call_later(
                settings.PRESENCE_WS_AUTH_TIMEOUT, lambda: asyncio.ensure_future(self._auth_timed_out())
            )

    async def disconnect(self, code):
        deadline = getattr(self, "auth_deadline", None)
        if deadline:
            deadline.cancel()
        if self.listener:
            HUB.leave(self.listener, closed_by_client=code in CLEAN_CLOSES)

    # --- Frames from the client ------------------------------------------------------------
    async def receive(self, text_data=None, bytes_data=None):
        if self.closing:  # sent before the client read the close
            return
        self.last_frame = time.monotonic()
        if self.listener:
            self.listener.alive_at = timezone.now()
        if not self._within_rate():
            await self._close_for_what_it_sent(CloseCode.TOO_MANY_FRAMES, "too_many_frames")
            return
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > MAX_FRAME_BYTES:
            await self._close_for_what_it_sent(CloseCode.TOO_BIG, "frame_too_big")
            return
        if text_data is None:
            await self._error("bad_frame", "Send JSON text frames.")
            return
        try:
            frame = json.loads(text_data)
        except ValueError:
            await self._error("bad_json", "A frame is one JSON object.")
            return
        kind = frame.get("type") if isinstance(frame, dict) else None
        handler = {
            "auth": self._on_auth,
            "ping": self._on_ping,
            "status": self._on_status,
            "subscribe": self._on_subscribe,
            "unsubscribe": self._on_unsubscribe,
            "resume": self._on_resume,
        }.get(kind)
        if handler is None:
            await self._error("unknown_type", "Frame types: auth, ping, status, subscribe, unsubscribe, resume.")
            return
        if kind not in ("auth", "ping") and self.listener is None:
            await self._error("not_authenticated", 'Send {"type": "auth", "token": ...} first.')
            return
        await handler(frame)

    async def _on_ping(self, frame):
        await self._send({"type": "pong"})

    async def _on_auth(self, frame):
        if self.listener is not None:
            await self._error("already_authenticated", "This socket is authenticated already.")
            return
        token = frame.get("token")
        if not isinstance(token, str) or not token:
            await self._error("invalid", "`token` must be an access token.")
            return
        await self._authenticate(token)

    async def _on_status(self, frame):
        status = frame.get("status")
        if status not in ReportedStatus.values:
            await self._error("invalid", f"`status` must be one of: {', '.join(ReportedStatus.values)}.")
            return
        session = self.listener.session
        await in_db_thread(presence.record_activity)(
            user=session.user, session=session, active=status == ReportedStatus.ONLINE, reported_status=status
        )
        await self._send({"type": "status", "online_status": effective_status(user=session.user)})

    async def _on_subscribe(self, frame):
        user_ids = _user_ids(frame.get("user_ids"))
        if user_ids is None:
            await self._error("invalid", "`user_ids` must be a list of user ids.")
            return
        if len(self.listener.subscriptions | user_ids) > settings.PRESENCE_WS_MAX_SUBSCRIPTIONS:
            limit = settings.PRESENCE_WS_MAX_SUBSCRIPTIONS
            await self._error("too_many_subscriptions", f"A socket follows at most {limit} users.")
            return
        HUB.subscribe(self.listener, user_ids)
        rows, shown_at = await in_db_thread(snapshot_rows)(
            user_ids=user_ids, viewer_id=self.listener.user_id, is_staff=self.listener.is_staff
        )
        HUB.remember_public_rows({user_id: row for user_id, row in rows.items() if user_id != self.listener.user_id})
        for user_id in user_ids:
            self.floors[user_id] = shown_at
        await self._send({"type": "subscribed", "user_ids": sorted(str(pk) for pk in self.listener.subscriptions)})
        await self._send_rows(list(rows.values()), removed=[], cursor=HUB.cursor)
        self._pay_for_rows(len(rows))

    async def _on_unsubscribe(self, frame):
        user_ids = _user_ids(frame.get("user_ids"))
        if user_ids is None:
            await self._error("invalid", "`user_ids` must be a list of user ids.")
            return
        HUB.unsubscribe(self.listener, user_ids)
        await self._send({"type": "subscribed", "user_ids": sorted(str(pk) for pk in self.listener.subscriptions)})

    async def _on_resume(self, frame):
        cursor = frame.get("cursor")
        if not isinstance(cursor, str):
            await self._error("invalid", "`cursor` must be the `cursor` of an earlier frame or list.")
            return
        await self._resume(cursor)

    # --- Pushed by the hub ---------------------------------------------------------------------
    async def send_changes(
        self, *, rows: list[dict], removed: list[int], cursor: feed.Cursor, since: feed.Cursor | None = None
    ):
        rows = [row for row in rows if not self._is_stale(row["id"], cursor)]
        removed = [user_id for user_id in removed if not self._is_stale(user_id, cursor)]
        if rows or removed:
            await self._send_rows(rows, removed=removed, cursor=cursor, since=since)

    async def send_resync_required(self):
        await self._error("resync_required", "Too many changes at once: fetch the list again, then resume.")

    async def close_for_revocation(self):
        await self._close(CloseCode.UNAUTHORIZED, "session_revoked")

    def idle_for(self) -> float:
        return time.monotonic() - self.last_frame

    async def close_too_slow(self):
        await self._close(CloseCode.AUTH_TIMEOUT, "too_slow")

    async def close_idle(self):
        """No frame for PRESENCE_WS_IDLE_TIMEOUT: a dead peer (a laptop asleep, a lost
        network), whatever the server's protocol pings say."""
        await self._close(CloseCode.AUTH_TIMEOUT, "idle")

    # --- Internals -----------------------------------------------------------------------------
    async def _authenticate(self, token: str):
        deadline = getattr(self, "auth_deadline", None)
        if deadline:
            deadline.cancel()
        try:
            session = await in_db_thread(session_of_access_token)(token)
        except DomainError as refused:
            log_event(logger, "socket_refused", level=logging.WARNING, reason=refused.code)
            await self._close(CloseCode.UNAUTHORIZED, refused.code)
            return
        listener = Listener(socket=self, session=session, is_staff=session.user.is_staff)
        # Per user (or "*": all): what this socket was last sent directly (a subscribe's rows, a
        # resume) showed that moment; a push computed before it is older, and dropped.
        self.floors: dict[int | str, datetime] = {}
        try:
            cursor = await HUB.join(listener)
        except TooManySockets:
            log_event(
                logger, "socket_refused", level=logging.WARNING, reason="too_many_sockets", user_id=session.user_id
            )
            await self._close(CloseCode.TOO_MANY_SOCKETS, "too_many_sockets")
            return
        self.listener = listener
        log_event(logger, "socket_opened", user_id=session.user_id, session_id=session.pk)
        await self._send(
            {
                "type": "hello",
                "user_id": str(session.user_id),
                "session_id": str(session.pk),
                "is_staff": session.user.is_staff,
                "cursor": str(cursor),
                "ping_interval": settings.PRESENCE_HEARTBEAT_INTERVAL,
            }
        )
        if self.resume_from:
            await self._resume(self.resume_from)

    async def _resume(self, raw_cursor: str):
        # A copy of what the socket hears: the read runs in another thread.
        is_staff, viewer_id = self.listener.is_staff, self.listener.user_id
        subscriptions = None if is_staff else frozenset(self.listener.subscriptions)

        def read():
            now = timezone.now()
            head = feed.current_cursor(now=now)  # read once: checks the cursor, and is the next one
            cursor = feed.parse_cursor(raw_cursor, now=now, head=head)
            heard = accounts.users_for_admin().filter(is_active=True)
            if subscriptions is not None:
                heard = heard.filter(pk__in=subscriptions)
            changes = feed.changes_since(queryset=heard, cursor=cursor, now=now, head=head)
            viewer = SimpleNamespace(is_staff=is_staff, pk=viewer_id)
            removed = [pk for pk in changes.removed_ids if subscriptions is None or pk in subscriptions]
            return rows_for(changes.users, viewer=viewer, now=now), removed, changes.cursor, cursor

        try:
            rows, removed, cursor, since = await in_db_thread(read)()
        except DomainError as refused:
            await self._error(refused.code, refused.message)
            return
        self.floors = {"*": cursor.at}
        await self._send_rows(list(rows.values()), removed=removed, cursor=cursor, since=since)
        self._pay_for_rows(len(rows))

    def _is_stale(self, user_id: int, cursor: feed.Cursor) -> bool:
        floor = self.floors.get(user_id) or self.floors.get("*")
        return floor is not None and cursor.at <= floor

    async def _send_rows(self, rows, *, removed, cursor, since=None):
        """A `presence` frame (several past ROWS_PER_FRAME rows: all but the last carry `since`,
        where the batch started, so that a client that resumes from one of them misses nothing),
        then the frontend's `user_status_change` frame for each row."""
        chunks = [rows[start : start + ROWS_PER_FRAME] for start in range(0, len(rows), ROWS_PER_FRAME)] or [[]]
        for index, chunk in enumerate(chunks):
            last = index == len(chunks) - 1
            await self._send(
                {
                    "type": "presence",
                    "users": chunk,
                    "removed": removed if last else [],
                    "cursor": str(cursor if last or since is None else since),
                }
            )
            for row in chunk:
                # The OffChat frontend's frame, one per change.
                await self._send(
                    {
                        "type": "user_status_change",
                        "user_id": str(row["id"]),
                        "username": row["username"],
                        "online_status": row["online_status"],
                    }
                )

    def _within_rate(self) -> bool:
        now = time.monotonic()
        self.tokens = min(float(FRAME_BURST), self.tokens + (now - self.refilled) * FRAME_RATE)
        self.refilled = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    async def _close_for_what_it_sent(self, code: int, reason: str):
        """A flood or an oversized frame: logged at WARNING, as a refused token is, so that abuse
        shows in the log."""
        whose = {"user_id": self.listener.user_id} if self.listener else {}
        log_event(logger, "socket_closed", level=logging.WARNING, reason=reason, **whose)
        await self._close(code, reason)

    def _pay_for_rows(self, rows: int) -> None:
        """What an answer of `rows` rows costs, after the frame's own: the bucket may go below
        zero, and the next frames wait for the refill (or close the socket 4429)."""
        self.tokens -= rows / ROWS_PER_FRAME_COST

    async def _auth_timed_out(self):
        if self.listener is None:
            await self._close(CloseCode.AUTH_TIMEOUT, "auth_timeout")

    async def _close(self, code: int, reason: str):
        if self.listener:
            HUB.leave(self.listener)
            self.listener = None
        await super()._close(code, reason)


def _user_ids(raw) -> set[int] | None:
    if not isinstance(raw, list) or len(raw) > 10_000:
        return None
    ids = set()
    for item in raw:
        if isinstance(item, bool) or not isinstance(item, int | str) or not str(item).isdigit():
            return None
        ids.add(int(item))
    return ids if all(0 < pk < 2**63 for pk in ids) else None
