"""The hub's bookkeeping, without a server or a database: which sockets a batch goes to (found from
the changed users, not by visiting every socket) and the indexes the feed's read needs, kept as
sockets come and go (docs/realtime.md, "Capacity")."""

import asyncio
import gc
import json
import subprocess
import sys
import threading
import uuid
from types import SimpleNamespace

import pytest
from django.db import DatabaseError

from offchat_backend.tests.support import REPO, clean_env
from users.realtime import hub as hub_module
from users.realtime.hub import Batch, Hub, Listener, TooManySockets


def listener(user_id, *, staff=False, session=None):
    session = SimpleNamespace(pk=session or uuid.uuid4(), user_id=user_id, revoked_at=None)
    return Listener(socket=None, session=session, is_staff=staff)


def held(hub, *listeners):
    """As Hub.join leaves them, without its database work."""
    for one in listeners:
        hub.hold(one)


def row(user_id, status, audience):
    return {"id": user_id, "online_status": status, "audience": audience}


def test_a_batch_goes_to_staff_and_to_the_followers_of_what_changed_each_as_it_may_see_it():
    hub = Hub()
    staff, follower, own, bystander = listener(1, staff=True), listener(2), listener(3), listener(4)
    held(hub, staff, follower, own, bystander)
    hub.subscribe(follower, {3, 5, 9})
    hub.subscribe(own, {3})  # follows itself: hears its own row
    hub.subscribe(bystander, {7})
    batch = Batch(
        cursor=None,
        staff_rows={3: row(3, "away", "staff"), 5: row(5, "online", "staff")},
        public_rows={3: row(3, "away", "public"), 5: row(5, "online", "public")},
        own_rows={3: row(3, "away", "own")},
        removed=[9],
    )
    staff_changed, public_changed = hub._what_changed(batch)
    shares = hub._shares(batch, staff_changed, public_changed)

    assert set(shares) == {staff, follower, own}  # nothing for a socket that follows none of them
    assert shares[staff] == ([row(3, "away", "staff"), row(5, "online", "staff")], [9])
    assert shares[follower] == ([row(3, "away", "public"), row(5, "online", "public")], [9])
    assert shares[own] == ([row(3, "away", "own")], [])


def test_a_row_that_shows_nothing_new_is_not_pushed_again():
    hub = Hub()
    staff, follower = listener(1, staff=True), listener(2)
    held(hub, staff, follower)
    hub.subscribe(follower, {3})
    batch = Batch(cursor=None, staff_rows={3: row(3, "away", "staff")}, public_rows={3: row(3, "away", "public")})
    assert set(hub._shares(batch, *hub._what_changed(batch))) == {staff, follower}
    # The same rows again (a change that shows nothing new): nobody.
    assert hub._shares(batch, *hub._what_changed(batch)) == {}
    # A hidden user: staff see a change, followers the same offline row as before, so only staff hear.
    batch = Batch(cursor=None, staff_rows={3: row(3, "online", "staff")}, public_rows={3: row(3, "away", "public")})
    assert set(hub._shares(batch, *hub._what_changed(batch))) == {staff}
    # What a subscribe sent is what later pushes compare with.
    hub.remember_public_rows({4: row(4, "offline", "public")})
    hub.subscribe(follower, {4})
    batch = Batch(cursor=None, staff_rows={4: row(4, "online", "staff")}, public_rows={4: row(4, "offline", "public")})
    assert set(hub._shares(batch, *hub._what_changed(batch))) == {staff}


def test_the_indexes_for_the_feed_follow_joins_leaves_and_subscriptions():
    hub = Hub()
    tab1, tab2, other_session = listener(3), listener(3), listener(3)
    tab2.session, tab2.session_id = tab1.session, tab1.session_id  # two tabs of one session
    held(hub, tab1, tab2, other_session)
    assert sorted(hub.sessions_of_user[3]) == sorted({tab1.session_id, other_session.session_id})
    assert len(hub.by_session[tab1.session_id]) == 2

    hub.subscribe(tab1, {3, 4})
    hub.subscribe(tab1, {3})  # again: counted once
    hub.subscribe(tab2, {3})
    assert hub.self_subscribed == {3: 2}
    hub.unsubscribe(tab1, {3, 8})
    assert hub.self_subscribed == {3: 1}
    assert tab1.subscriptions == frozenset({4})

    hub.grace_timers = {}
    hub.leave(tab2)  # the session still has a socket: no grace period
    assert hub.self_subscribed == {} and hub.by_session[tab1.session_id] == (tab1,)
    assert sorted(hub.sessions_of_user[3]) == sorted({tab1.session_id, other_session.session_id})


def test_the_touch_is_spread_in_slices_and_writes_every_session_once_a_window(settings, monkeypatch):
    settings.PRESENCE_WRITE_GRANULARITY = 10
    written = []
    monkeypatch.setattr(hub_module.presence, "touch_sessions", lambda *, session_ids, at: written.append(session_ids))
    hub = Hub()
    sockets = [listener(user_id) for user_id in range(1, 51)]
    held(hub, *sockets)
    before = {one.session_id: one.alive_at for one in sockets}

    async def ticks(count):
        for _ in range(count):
            hub.last_touch -= 1.0  # a tick a second
            await hub._touch_due_sessions()

    asyncio.run(ticks(10))
    # A slice every 2 s (a fifth of the window), each a fifth of the sessions in one statement.
    assert [len(chunk) for chunk in written] == [10] * 5
    assert sorted(sid for chunk in written for sid in chunk) == sorted(before)  # each once
    assert all(one.alive_at > before[one.session_id] for one in sockets)

    written.clear()
    sockets[0].session.revoked_at = "logged out"  # no grace period to wait for
    hub.leave(sockets[0])
    asyncio.run(ticks(10))
    assert sorted(sid for chunk in written for sid in chunk) == sorted(list(before)[1:])  # the gone one is not

    # A handful of sockets: a session at a time, each once a window, not one statement a tick each.
    written.clear()
    few = Hub()
    held(few, listener(1), listener(2))
    hub = few
    asyncio.run(ticks(10))
    assert [len(chunk) for chunk in written] == [1, 1]


def test_listeners_share_the_empty_subscriptions_and_keep_no_dict():
    one, two = listener(1), listener(2)
    assert one.subscriptions is two.subscriptions
    assert not hasattr(one, "__dict__")


def test_the_asgi_application_freezes_start_up_out_of_the_collector(tmp_path):
    """offchat_backend.asgi sets ASGI_GC_THRESHOLDS and freezes what start-up loaded."""
    script = "import gc, offchat_backend.asgi; print(gc.get_threshold(), gc.get_freeze_count() > 10_000, sep=';')"
    env = clean_env(
        DJANGO_SETTINGS_MODULE="offchat_backend.settings.development",
        DEBUG="false",
        LOCAL_STATE_DIR=str(tmp_path),
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "(50000, 20, 10);True", run.stdout
    assert gc.get_freeze_count() == 0  # the settings, imported here, froze nothing in this process


def test_a_big_batch_goes_in_frames_of_at_most_1000_rows_and_only_the_last_moves_the_cursor():
    from datetime import UTC, datetime

    from users.realtime.consumers import ROWS_PER_FRAME, PresenceConsumer
    from users.selectors.feed import Cursor

    sent = []

    async def send(message):
        sent.append(json.loads(message["text"]))

    consumer = PresenceConsumer()
    consumer.base_send, consumer.floors = send, {}
    since, cursor = Cursor(7, datetime(2026, 1, 1, tzinfo=UTC)), Cursor(9, datetime(2026, 1, 1, 0, 1, tzinfo=UTC))
    rows = [{"id": n, "username": f"u{n}", "online_status": "offline"} for n in range(1, 2501)]
    asyncio.run(consumer.send_changes(rows=rows, removed=[5000], cursor=cursor, since=since))

    frames = [f for f in sent if f["type"] == "presence"]
    assert [len(f["users"]) for f in frames] == [ROWS_PER_FRAME, ROWS_PER_FRAME, 500]
    assert [f["cursor"] for f in frames] == [str(since), str(since), str(cursor)]
    assert [f["removed"] for f in frames] == [[], [], [5000]]
    assert sum(f["type"] == "user_status_change" for f in sent) == 2500
    assert max(len(json.dumps(f)) for f in frames) < 2**20  # under daphne's message limit


def test_a_join_that_fails_gives_its_users_slot_back(settings, monkeypatch):
    """The cap's count (PRESENCE_WS_MAX_SOCKETS_PER_USER) is taken before the join's database
    work and given back when that work fails, or when the socket leaves."""
    settings.PRESENCE_WS_MAX_SOCKETS_PER_USER = 1
    failing = {"now": True}

    def connect_session(*, session, at):
        if failing["now"]:
            raise DatabaseError("the database went away")

    monkeypatch.setattr(hub_module.presence, "connect_session", connect_session)
    monkeypatch.setattr(hub_module.feed, "current_cursor", lambda *, now: "cursor")
    monkeypatch.setattr(Hub, "_follow", lambda self: asyncio.sleep(0))

    async def joins():
        hub, first, second = Hub(), listener(3), listener(3)
        with pytest.raises(DatabaseError):
            await hub.join(first)
        assert hub.sockets_of_user == {}
        failing["now"] = False
        assert await hub.join(first) == "cursor"
        with pytest.raises(TooManySockets):
            await hub.join(second)
        first.session.revoked_at = "logged out"  # no grace period to wait for
        hub.leave(first)
        assert hub.sockets_of_user == {}
        assert await hub.join(second) == "cursor"

    asyncio.run(joins())


def test_a_tab_closing_while_another_tab_of_its_session_joins_leaves_one_grace_period(settings, monkeypatch):
    """Tab A closes while tab B of the same session is joining (B's database work in flight):
    B's join stops the grace period A's close started, and B's close starts the only one. Two
    used to run: the stale one ended the session as of A's close and took the other out of the
    hub's count, so /metrics showed no session in grace while one was (drill 14)."""
    settings.PRESENCE_DISCONNECT_GRACE = 0.05
    connecting, ended = threading.Event(), []
    connecting.set()
    monkeypatch.setattr(hub_module.presence, "connect_session", lambda *, session, at: connecting.wait(5))
    monkeypatch.setattr(
        hub_module.presence, "end_closed_session", lambda *, session, closed_at: ended.append(closed_at)
    )
    monkeypatch.setattr(hub_module.feed, "current_cursor", lambda *, now: "cursor")
    monkeypatch.setattr(Hub, "_follow", lambda self: asyncio.sleep(0))

    async def tabs():
        hub, a = Hub(), listener(3)
        b = listener(3, session=a.session.pk)
        await hub.join(a)
        connecting.clear()
        joining = asyncio.create_task(hub.join(b))
        await asyncio.sleep(0.01)  # B waits for the database
        hub.leave(a, closed_by_client=True)
        connecting.set()
        await joining
        hub.leave(b, closed_by_client=True)
        assert list(hub.grace_timers) == [b.session_id]
        await asyncio.sleep(0.2)
        return hub, b

    hub, b = asyncio.run(tabs())
    assert ended == [b.alive_at] and hub.grace_timers == {}
