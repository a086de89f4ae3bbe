"""The presence socket through a real ASGI server (daphne) and real WebSocket clients, on this
test session's database (docs/realtime.md)."""

import asyncio
import json
import struct
import time
from contextlib import ExitStack
from datetime import timedelta
from socket import SHUT_RDWR, SO_LINGER, SOL_SOCKET

import pytest
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from users.models import OnlineStatus, PresenceSession, SessionEndReason, User
from users.realtime.consumers import PresenceConsumer
from users.services import auth, presence
from users.tests.factories import StaffFactory, UserFactory
from users.tests.helpers import closed_with, errors_in, frames, reply, send

pytestmark = pytest.mark.django_db(transaction=True)


def changes_of(user, received):
    return [f for f in received if f["type"] == "user_status_change" and f["user_id"] == str(user.pk)]


def stored_status(user):
    return User.objects.get(pk=user.pk).online_status


# --- Authentication ------------------------------------------------------------------------------
def test_three_ways_to_present_the_token_and_a_hello_with_the_cursor(server):
    asgi, user = server(), UserFactory()
    access = auth.log_in(user=user).access
    with connect(asgi.ws_url(f"?token={access}")) as socket:
        hello = json.loads(socket.recv(timeout=5))
    assert (hello["type"], hello["user_id"], hello["is_staff"]) == ("hello", str(user.pk), False)
    assert hello["cursor"].count("-") == 1

    with connect(asgi.ws_url(), subprotocols=["offchat.presence", f"token.{access}"]) as socket:
        assert socket.subprotocol == "offchat.presence"
        assert json.loads(socket.recv(timeout=5))["type"] == "hello"

    with connect(asgi.ws_url()) as socket:
        assert reply(socket, {"type": "ping"}) == {"type": "pong"}  # allowed before auth
        assert reply(socket, {"type": "status", "status": "away"})["code"] == "not_authenticated"
        assert reply(socket, {"type": "auth", "token": access})["type"] == "hello"
        assert reply(socket, {"type": "auth", "token": access})["code"] == "already_authenticated"
    assert access not in asgi.output()  # never in a log line, access log included


def test_bad_expired_and_revoked_tokens_are_closed_4401_with_the_reason(server):
    asgi, user = server(), UserFactory()
    issued = auth.log_in(user=user)
    expired = AccessToken(issued.access)
    expired.set_exp(lifetime=-timedelta(seconds=1))
    logged_out = auth.log_in(user=user)
    auth.end_session(session=logged_out.session)
    cases = {"garbage": "token_not_valid", str(expired): "token_not_valid", logged_out.access: "session_revoked"}
    for token, reason in cases.items():
        with connect(asgi.ws_url(f"?token={token}")) as socket:
            assert closed_with(socket) == (4401, reason)
    with connect(asgi.ws_url()) as socket:
        send(socket, {"type": "auth", "token": "garbage"})
        assert closed_with(socket) == (4401, "token_not_valid")
    assert stored_status(user) == OnlineStatus.ONLINE  # the refused sockets changed nothing


def test_no_token_in_time_is_closed_4408(server):
    with connect(server(PRESENCE_WS_AUTH_TIMEOUT="1").ws_url()) as socket:
        assert closed_with(socket, timeout=5) == (4408, "auth_timeout")


def test_a_browser_page_of_another_site_cannot_open_a_socket(server):
    asgi, user = server(CORS_ALLOWED_ORIGINS="http://localhost:5173"), UserFactory()
    access = auth.log_in(user=user).access
    with pytest.raises(InvalidStatus) as refused:
        connect(asgi.ws_url(f"?token={access}"), origin="https://evil.example")
    assert refused.value.response.status_code == 403
    for origin in ("http://localhost:5173", f"http://127.0.0.1:{asgi.port}"):
        with connect(asgi.ws_url(f"?token={access}"), origin=origin) as socket:
            assert json.loads(socket.recv(timeout=5))["type"] == "hello"


# --- Sockets per user ----------------------------------------------------------------------------
def opened(sockets, url, *, timeout=5.0, **options):
    """A socket at `url` that got its hello (closed with `sockets`, an ExitStack), retried while
    the server still counts a socket that just closed: its close reaches the hub a moment after
    the client's."""
    deadline = time.monotonic() + timeout
    while True:
        socket = sockets.enter_context(connect(url, **options))
        frame = json.loads(socket.recv(timeout=5))
        if frame["type"] == "hello":
            return socket
        socket.close()
        assert frame["code"] == "too_many_sockets" and time.monotonic() < deadline, frame
        time.sleep(0.05)


def dropped(socket):
    """The client's network goes: the TCP connection ends with no close frame (1006 to the server)."""
    socket.socket.setsockopt(SOL_SOCKET, SO_LINGER, struct.pack("ii", 1, 0))  # a reset, not a goodbye
    socket.socket.shutdown(SHUT_RDWR)
    with pytest.raises(ConnectionClosed):
        socket.recv(timeout=5)


def test_a_user_past_the_socket_cap_is_closed_4429_and_a_closed_or_dropped_socket_frees_its_slot(server):
    asgi, user, other = server(PRESENCE_WS_MAX_SOCKETS_PER_USER="3"), UserFactory(), UserFactory()
    phone, laptop = auth.log_in(user=user), auth.log_in(user=user)
    with ExitStack() as sockets:
        held = [opened(sockets, asgi.ws_url(f"?token={phone.access}")) for _ in range(2)]
        held.append(opened(sockets, asgi.ws_url(), subprotocols=["offchat.presence", f"token.{laptop.access}"]))
        written = list(User.objects.filter(pk=user.pk).values_list("presence_update_id", "last_seen"))
        written += PresenceSession.objects.filter(user=user).order_by("pk").values_list("last_seen", flat=True)

        with connect(asgi.ws_url(f"?token={laptop.access}")) as fourth:  # any session of the user counts
            assert closed_with(fourth) == (4429, "too_many_sockets")
        with connect(asgi.ws_url()) as late:
            send(late, {"type": "auth", "token": phone.access})
            assert closed_with(late) == (4429, "too_many_sockets")
        for _ in range(3):  # the cap is per user
            opened(sockets, asgi.ws_url(f"?token={auth.log_in(user=other).access}"))
        now = list(User.objects.filter(pk=user.pk).values_list("presence_update_id", "last_seen"))
        now += PresenceSession.objects.filter(user=user).order_by("pk").values_list("last_seen", flat=True)
        assert now == written  # the refused sockets wrote nothing

        held.pop(0).close()
        held.append(opened(sockets, asgi.ws_url(f"?token={phone.access}")))
        dropped(held.pop(0))
        held.append(opened(sockets, asgi.ws_url(f"?token={phone.access}")))
        with connect(asgi.ws_url(f"?token={phone.access}")) as fourth:  # and still holds
            assert closed_with(fourth) == (4429, "too_many_sockets")
    log = asgi.output()
    assert log.count("event=socket_refused reason=too_many_sockets") >= 3
    assert errors_in(log) == []


def test_sockets_authenticating_at_once_never_share_the_last_slot(server):
    """Twelve sockets of one token open at once against a cap of 2: while the first two wait for
    the database, the others must not be let in."""
    asgi, user = server(PRESENCE_WS_MAX_SOCKETS_PER_USER="2"), UserFactory()
    url = asgi.ws_url(f"?token={auth.log_in(user=user).access}")

    async def first_frames():
        sockets = await asyncio.gather(*(async_connect(url) for _ in range(12)))
        answers = await asyncio.gather(*(socket.recv() for socket in sockets))
        await asyncio.gather(*(socket.close() for socket in sockets))
        return [json.loads(answer).get("code", "hello") for answer in answers]

    assert sorted(asyncio.run(first_frames())) == ["hello"] * 2 + ["too_many_sockets"] * 10


# --- Frames --------------------------------------------------------------------------------------
def test_unhappy_frames_get_an_error_frame_and_write_nothing(server):
    asgi, user = server(PRESENCE_WS_MAX_SUBSCRIPTIONS="3"), UserFactory()
    with connect(asgi.ws_url(f"?token={auth.log_in(user=user).access}")) as socket:
        socket.recv(timeout=5)
        before = User.objects.get(pk=user.pk).presence_update_id
        assert reply(socket, {"type": "ping"}) == {"type": "pong"}
        cases = [
            ("not json", "bad_json"),
            (json.dumps([1, 2]), "unknown_type"),
            (json.dumps({"type": "shout"}), "unknown_type"),
            (json.dumps({"type": "status", "status": "busy"}), "invalid"),
            (json.dumps({"type": "subscribe", "user_ids": "1,2"}), "invalid"),
            (json.dumps({"type": "subscribe", "user_ids": [True]}), "invalid"),
            (json.dumps({"type": "subscribe", "user_ids": [1, 2, 3, 4]}), "too_many_subscriptions"),
            (json.dumps({"type": "resume", "cursor": "nope"}), "invalid_cursor"),
            (json.dumps({"type": "resume"}), "invalid"),
        ]
        for raw, code in cases:
            socket.send(raw)
            answer = json.loads(socket.recv(timeout=5))
            assert (answer["type"], answer["code"]) == ("error", code), raw
        socket.send(b"\x00binary")
        assert json.loads(socket.recv(timeout=5))["code"] == "bad_frame"
        assert User.objects.get(pk=user.pk).presence_update_id == before


def test_an_oversized_frame_is_closed_4413(server):
    asgi, user = server(), UserFactory()
    with connect(asgi.ws_url(f"?token={auth.log_in(user=user).access}")) as socket:
        socket.recv(timeout=5)
        socket.send(json.dumps({"type": "ping", "padding": "x" * 20_000}))
        assert closed_with(socket) == (4413, "frame_too_big")
    logged = f"WARNING users.realtime.consumers event=socket_closed reason=frame_too_big user_id={user.pk}"
    assert logged in asgi.output()


def test_a_flood_of_frames_is_closed_4429_answers_cost_their_rows_and_the_backlog_is_dropped(server):
    asgi, user, followed = server(), UserFactory(), UserFactory.create_batch(100)
    subscribe = {"type": "subscribe", "user_ids": [one.pk for one in followed]}
    with connect(asgi.ws_url(f"?token={auth.log_in(user=user).access}"), max_queue=None) as socket:
        socket.recv(timeout=5)
        for _ in range(60):  # answered slower than sent: frames queue behind the one that closes
            try:
                send(socket, subscribe)
            except ConnectionClosed:
                break
        received = []
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                received.append(json.loads(socket.recv(timeout=10)))
    assert (closed.value.rcvd.code, received[-1]["code"]) == (4429, "too_many_frames")
    # Each answer of 100 rows cost a frame more: about half of the 30 frames at once were answered.
    assert 14 <= sum(frame["type"] == "subscribed" for frame in received) <= 20
    time.sleep(1)  # the consumer works through the frames queued behind the close meanwhile
    # They are dropped: nothing is sent to a closing socket (daphne raised, and logged a traceback).
    assert errors_in(asgi.output()) == []
    assert asgi.output().count(f"event=socket_closed reason=too_many_frames user_id={user.pk}") == 1


def test_nothing_is_sent_to_a_socket_the_server_is_closing():
    """daphne refuses a send to a socket it is closing. Frames queued behind the one that
    closed a socket (a flood's, sent before the client read the close) tried, and each ended
    the consumer with a traceback; so did the hub closing a socket that was closing already."""
    sent = []

    async def base_send(message):
        if sent and sent[-1]["type"] == "websocket.close":
            raise RuntimeError("Attempt to send on a closed protocol")  # autobahn's, in daphne
        sent.append(message)

    consumer = PresenceConsumer()
    consumer.base_send = base_send
    consumer.tokens, consumer.refilled, consumer.last_frame = 0.0, time.monotonic(), time.monotonic()

    async def flood():
        await consumer.receive(text_data=json.dumps({"type": "ping"}))  # over the limit: closed
        await consumer.receive(text_data=json.dumps({"type": "ping"}))  # the backlog
        await consumer.close_idle()

    asyncio.run(flood())
    assert [message["type"] for message in sent] == ["websocket.send", "websocket.close"]
    assert (json.loads(sent[0]["text"])["code"], sent[1]["code"]) == ("too_many_frames", 4429)


# --- Presence semantics --------------------------------------------------------------------------
def test_an_open_socket_keeps_its_session_live_without_http_heartbeats(server):
    asgi, user = server(PRESENCE_WRITE_GRANULARITY="1"), UserFactory()
    issued = auth.log_in(user=user)
    with connect(asgi.ws_url(f"?token={issued.access}")) as socket:
        socket.recv(timeout=5)
        opened = PresenceSession.objects.get(pk=issued.session.pk).last_seen
        time.sleep(2.5)  # two write windows of one second
        moved = PresenceSession.objects.get(pk=issued.session.pk).last_seen
        assert moved > opened
        assert User.objects.get(pk=user.pk).last_seen >= moved


def test_status_frames_set_the_sessions_report(server):
    asgi, user = server(), UserFactory()
    with connect(asgi.ws_url(f"?token={auth.log_in(user=user).access}")) as socket:
        socket.recv(timeout=5)
        assert reply(socket, {"type": "status", "status": "away"}) == {"type": "status", "online_status": "away"}
        assert stored_status(user) == OnlineStatus.AWAY
        assert reply(socket, {"type": "status", "status": "online"})["online_status"] == "online"
        assert stored_status(user) == OnlineStatus.ONLINE


def test_closing_the_last_socket_ends_the_session_after_the_grace_period_not_before(server):
    asgi, user = server(), UserFactory()
    issued = auth.log_in(user=user)
    with connect(asgi.ws_url(f"?token={issued.access}")) as socket:
        socket.recv(timeout=5)
    time.sleep(0.4)
    assert stored_status(user) == OnlineStatus.ONLINE  # within the grace period (1 s here)
    deadline = time.monotonic() + 5
    while stored_status(user) != OnlineStatus.OFFLINE and time.monotonic() < deadline:
        time.sleep(0.1)
    session = PresenceSession.objects.get(pk=issued.session.pk)
    assert (stored_status(user), session.end_reason, session.revoked_at) == (
        OnlineStatus.OFFLINE,
        SessionEndReason.CLOSED,
        None,
    )
    # Not a logout: the token still works, and a new socket revives the session.
    with connect(asgi.ws_url(f"?token={issued.access}")) as socket:
        socket.recv(timeout=5)
        assert stored_status(user) == OnlineStatus.ONLINE


def test_a_reload_within_the_grace_period_never_shows_offline(server):
    asgi, user = server(), UserFactory()
    issued = auth.log_in(user=user)
    watcher = StaffFactory()
    with connect(asgi.ws_url(f"?token={auth.log_in(user=watcher).access}")) as staff_socket:
        staff_socket.recv(timeout=5)
        with connect(asgi.ws_url(f"?token={issued.access}")) as socket:
            socket.recv(timeout=5)
        with connect(asgi.ws_url(f"?token={issued.access}")) as socket:  # the reload
            socket.recv(timeout=5)
            time.sleep(2)  # past the grace period of the first socket
            assert stored_status(user) == OnlineStatus.ONLINE
            assert PresenceSession.objects.get(pk=issued.session.pk).ended_at is None
        pushed = []
        try:
            while True:
                pushed.append(json.loads(staff_socket.recv(timeout=0.5)))
        except TimeoutError:
            pass
    assert all(change["online_status"] == "online" for change in changes_of(user, pushed))


def test_two_devices_closing_one_keeps_the_user_online(server):
    asgi, user = server(), UserFactory()
    phone, laptop = auth.log_in(user=user), auth.log_in(user=user)
    with connect(asgi.ws_url(f"?token={phone.access}")) as phone_socket:
        phone_socket.recv(timeout=5)
        with connect(asgi.ws_url(f"?token={laptop.access}")) as laptop_socket:
            laptop_socket.recv(timeout=5)
        time.sleep(2)  # past the laptop's grace period
        assert PresenceSession.objects.get(pk=laptop.session.pk).end_reason == SessionEndReason.CLOSED
        assert PresenceSession.objects.get(pk=phone.session.pk).ended_at is None
        assert stored_status(user) == OnlineStatus.ONLINE


# --- Pushes --------------------------------------------------------------------------------------
def test_staff_hear_every_change_and_others_only_their_subscriptions(server):
    asgi = server()
    admin, member, followed, stranger = StaffFactory(), UserFactory(), UserFactory(), UserFactory()
    with (
        connect(asgi.ws_url(f"?token={auth.log_in(user=admin).access}")) as staff_socket,
        connect(asgi.ws_url(f"?token={auth.log_in(user=member).access}")) as member_socket,
    ):
        for socket in (staff_socket, member_socket):
            socket.recv(timeout=5)
        send(member_socket, {"type": "subscribe", "user_ids": [str(followed.pk)]})
        snapshot = frames(member_socket, until=lambda f: f["type"] == "user_status_change")
        assert snapshot[0] == {"type": "subscribed", "user_ids": [str(followed.pk)]}
        assert [row["online_status"] for row in snapshot[1]["users"]] == ["offline"]

        started = time.monotonic()
        auth.log_in(user=followed)
        auth.log_in(user=stranger)
        heard = frames(member_socket, until=lambda f: f["type"] == "user_status_change")
        assert time.monotonic() - started < 2
        assert heard[-1] == {
            "type": "user_status_change",
            "user_id": str(followed.pk),
            "username": followed.username,
            "online_status": "online",
        }
        batch = next(f for f in heard if f["type"] == "presence")
        assert "email" not in batch["users"][0]  # the directory's row, not the admin's
        heard_of = set()
        staff_heard = frames(
            staff_socket,
            until=lambda f: f["type"] == "user_status_change"
            and (heard_of.add(f["user_id"]) or {str(followed.pk), str(stranger.pk)} <= heard_of),
        )
        assert changes_of(stranger, staff_heard)[-1]["online_status"] == "online"
        # The member never hears of the stranger.
        time.sleep(0.6)
        try:
            late = [json.loads(member_socket.recv(timeout=0.3))]
        except TimeoutError:
            late = []
        assert not changes_of(stranger, heard + late)


def test_a_user_hiding_presence_tells_a_non_staff_subscriber_nothing(server):
    asgi = server()
    hidden, member, admin = UserFactory(share_presence=False), UserFactory(), StaffFactory()
    with (
        connect(asgi.ws_url(f"?token={auth.log_in(user=member).access}")) as member_socket,
        connect(asgi.ws_url(f"?token={auth.log_in(user=admin).access}")) as staff_socket,
    ):
        for socket in (member_socket, staff_socket):
            socket.recv(timeout=5)
        send(member_socket, {"type": "subscribe", "user_ids": [hidden.pk]})
        snapshot = frames(member_socket, until=lambda f: f["type"] == "user_status_change")
        assert snapshot[-1]["online_status"] == "offline"
        issued = auth.log_in(user=hidden)
        presence.record_activity(user=issued.session.user, session=issued.session, active=False, reported_status="away")
        auth.end_session(session=issued.session)
        staff_heard = frames(
            staff_socket, until=lambda f: f["type"] == "user_status_change" and f["user_id"] == str(hidden.pk)
        )
        assert staff_heard
        time.sleep(1)
        quiet = []
        try:
            while True:
                quiet.append(json.loads(member_socket.recv(timeout=0.3)))
        except TimeoutError:
            pass
    assert quiet == []


def test_clock_and_sweep_transitions_are_pushed(server):
    asgi = server(PRESENCE_AWAY_AFTER="2")
    admin, idle = StaffFactory(), UserFactory()
    auth.log_in(user=idle)
    with connect(asgi.ws_url(f"?token={auth.log_in(user=admin).access}")) as socket:
        socket.recv(timeout=5)
        # Away with no write at all: only the clock moved.
        away = frames(
            socket, until=lambda f: f["type"] == "user_status_change" and f["user_id"] == str(idle.pk), timeout=6
        )
        assert away[-1]["online_status"] == "away"
        # The sweep, as the Celery worker runs it, in another process than the socket's.
        presence.mark_inactive_users_offline(now=timezone.now() + timedelta(hours=1))
        gone = frames(socket, until=lambda f: f["type"] == "user_status_change" and f["user_id"] == str(idle.pk))
        assert gone[-1]["online_status"] == "offline"


# --- Revocation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["logout", "force_logout", "deactivation"])
def test_ending_the_session_elsewhere_closes_its_sockets_within_2_seconds(server, how):
    asgi, user = server(), UserFactory()
    issued = auth.log_in(user=user)
    with connect(asgi.ws_url(f"?token={issued.access}")) as socket:
        socket.recv(timeout=5)
        started = time.monotonic()
        if how == "logout":
            auth.log_out(user=user, refresh_token=issued.refresh)
        elif how == "force_logout":
            auth.end_every_session(user=user)
        else:
            account = User.objects.get(pk=user.pk)
            account.is_active = False
            account.save()
        assert closed_with(socket, timeout=3) == (4401, "session_revoked")
        assert time.monotonic() - started < 2


# --- Resuming ------------------------------------------------------------------------------------
def test_a_socket_that_resumes_from_its_cursor_gets_exactly_what_it_missed(server):
    asgi = server()
    admin, missed, unchanged = StaffFactory(), UserFactory(), UserFactory()
    access = auth.log_in(user=admin).access
    with connect(asgi.ws_url(f"?token={access}")) as socket:
        cursor = json.loads(socket.recv(timeout=5))["cursor"]
    auth.log_in(user=missed)
    with connect(asgi.ws_url(f"?token={access}&cursor={cursor}")) as socket:
        received = frames(socket, until=lambda f: f["type"] == "presence")
    rows = {row["id"]: row for row in received[-1]["users"]}
    assert rows[missed.pk]["online_status"] == "online"
    assert unchanged.pk not in rows
    with connect(asgi.ws_url(f"?token={access}")) as socket:
        socket.recv(timeout=5)
        too_old = f"1-{int((timezone.now() - timedelta(days=2)).timestamp() * 1000)}"
        assert reply(socket, {"type": "resume", "cursor": too_old})["code"] == "resync_required"


def test_a_silent_peer_is_closed_after_the_idle_timeout_and_its_session_ends_after_the_grace(server):
    asgi, user = server(PRESENCE_WS_IDLE_TIMEOUT="1"), UserFactory()
    issued = auth.log_in(user=user)
    with connect(asgi.ws_url(f"?token={issued.access}")) as socket:
        socket.recv(timeout=5)
        started = time.monotonic()
        assert closed_with(socket, timeout=5) == (4408, "idle")
        assert time.monotonic() - started < 3
    deadline = time.monotonic() + 5
    while stored_status(user) != OnlineStatus.OFFLINE and time.monotonic() < deadline:
        time.sleep(0.1)
    assert PresenceSession.objects.get(pk=issued.session.pk).end_reason == SessionEndReason.CLOSED


def test_pings_write_nothing(server):
    asgi, user = server(), UserFactory()  # the default write window: 25 s
    issued = auth.log_in(user=user)
    with connect(asgi.ws_url(f"?token={issued.access}")) as socket:
        socket.recv(timeout=5)
        opened = PresenceSession.objects.get(pk=issued.session.pk).last_seen
        before = User.objects.values_list("last_seen", "presence_update_id").get(pk=user.pk)
        for _ in range(5):
            assert reply(socket, {"type": "ping"}) == {"type": "pong"}
            time.sleep(0.2)
        assert PresenceSession.objects.get(pk=issued.session.pk).last_seen == opened
        assert User.objects.values_list("last_seen", "presence_update_id").get(pk=user.pk) == before


def test_a_user_who_flaps_within_one_batch_is_pushed_once_in_the_final_state(server):
    asgi = server(PRESENCE_PUSH_INTERVAL="2")
    admin, marker, flapper = StaffFactory(), UserFactory(), UserFactory()
    with connect(asgi.ws_url(f"?token={auth.log_in(user=admin).access}")) as socket:
        socket.recv(timeout=5)
        auth.log_in(user=marker)
        # A batch just went out: the next is two seconds away.
        frames(socket, until=lambda f: f["type"] == "user_status_change" and f["user_id"] == str(marker.pk))
        issued = auth.log_in(user=flapper)
        for status in ("away", "online", "away"):
            session = PresenceSession.objects.select_related("user").get(pk=issued.session.pk)
            presence.record_activity(user=session.user, session=session, active=False, reported_status=status)
        received = []
        try:
            while True:
                received.append(json.loads(socket.recv(timeout=3)))
        except TimeoutError:
            pass
    assert [change["online_status"] for change in changes_of(flapper, received)] == ["away"]
