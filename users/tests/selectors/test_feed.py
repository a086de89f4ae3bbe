"""The change feed's reading side (users.selectors.feed): cursors, and the changes since one."""

import itertools
import random
import threading
import time
from datetime import timedelta

import pytest
import time_machine
from django.db import connection, connections, transaction
from django.utils import timezone

from users.exceptions import InvalidCursorError, ResyncRequiredError
from users.models import OnlineStatus, PresenceSession, ReportedStatus, SessionEndReason, User
from users.presence_rules import effective_status, status_q, transition_margin
from users.selectors import feed
from users.selectors.accounts import user_directory, users_for_admin
from users.selectors.feed import Cursor, changes_since, current_cursor, parse_cursor
from users.selectors.presence import presence_shown_to
from users.services import presence
from users.tests.factories import StaffFactory, UserFactory

NOW = timezone.now().replace(microsecond=0)
TIMEOUT = timedelta(seconds=120)
AWAY_AFTER = timedelta(seconds=300)


@pytest.mark.django_db
class TestCursor:
    def test_round_trips(self):
        UserFactory()
        cursor = current_cursor(now=NOW)
        assert parse_cursor(str(cursor), now=NOW) == cursor

    @pytest.mark.parametrize("raw", ["", "abc", "1-", "-5", "1-2-3", "1.5-100", "9" * 40 + "-1", "1-1e9", " 1-1"])
    def test_malformed_cursors_are_refused(self, raw):
        with pytest.raises(InvalidCursorError):
            parse_cursor(raw, now=NOW)

    def test_a_cursor_from_the_future_is_refused(self):
        UserFactory()
        with pytest.raises(InvalidCursorError):
            parse_cursor(str(Cursor(update_id=current_cursor(now=NOW).update_id + 1, at=NOW)), now=NOW)
        with pytest.raises(InvalidCursorError):
            parse_cursor(str(Cursor(update_id=0, at=NOW + timedelta(hours=1))), now=NOW)

    def test_a_cursor_older_than_the_feed_keeps_asks_for_a_resync(self, settings):
        old = Cursor(update_id=0, at=NOW - timedelta(seconds=settings.PRESENCE_FEED_MAX_AGE + 1))
        with pytest.raises(ResyncRequiredError):
            parse_cursor(str(old), now=NOW)


@pytest.mark.django_db
class TestChangesSince:
    def test_returns_only_users_changed_after_the_cursor(self):
        unchanged, changed = UserFactory(), UserFactory()
        cursor = current_cursor(now=NOW)
        presence.start_session(user=changed, at=NOW)

        changes = changes_since(queryset=user_directory(), cursor=cursor, now=NOW)

        assert [user.pk for user in changes.users] == [changed.pk]
        assert changes.removed_ids == []
        assert changes.cursor.update_id > cursor.update_id
        assert unchanged.pk not in {user.pk for user in changes.users}
        assert changes_since(queryset=user_directory(), cursor=changes.cursor, now=NOW).users == []

    def test_a_user_whose_status_the_clock_changed_is_included_with_no_write(self):
        user = UserFactory()
        presence.start_session(user=user, at=NOW)
        cursor = current_cursor(now=NOW + timedelta(seconds=10))
        later = NOW + TIMEOUT + timedelta(seconds=1)  # no sweep ran: the stored column says online

        changes = changes_since(queryset=user_directory(), cursor=cursor, now=later)

        assert [u.pk for u in changes.users] == [user.pk]
        assert effective_status(user=changes.users[0], now=later) == OnlineStatus.OFFLINE
        # Polls overlap by the write margin, so it comes once more, then no longer.
        past_the_margin = later + transition_margin() + timedelta(seconds=1)
        again = changes_since(queryset=user_directory(), cursor=changes.cursor, now=past_the_margin)
        assert changes_since(queryset=user_directory(), cursor=again.cursor, now=past_the_margin).users == []

    def test_a_user_who_went_away_by_the_clock_is_included(self, settings):
        user = UserFactory()
        session = presence.start_session(user=user, at=NOW)
        cursor = current_cursor(now=NOW + timedelta(seconds=10))
        settings.PRESENCE_WRITE_GRANULARITY = 0
        for seconds in (60, 120, 180, 240, 300):  # connected, no input
            presence.record_activity(user=user, session=session, active=False, at=NOW + timedelta(seconds=seconds))
        changes = changes_since(queryset=user_directory(), cursor=cursor, now=NOW + AWAY_AFTER + timedelta(seconds=1))
        assert [u.pk for u in changes.users] == [user.pk]

    def test_users_who_left_the_list_are_named_in_removed(self):
        deactivated, deleted, stays = UserFactory(), UserFactory(), UserFactory()
        cursor = current_cursor(now=NOW)
        deactivated.is_active = False
        deactivated.save()
        deleted_id = deleted.pk
        deleted.delete()
        presence.start_session(user=stays, at=NOW)

        changes = changes_since(queryset=user_directory(), cursor=cursor, now=NOW)

        assert [user.pk for user in changes.users] == [stays.pk]
        assert changes.removed_ids == sorted([deactivated.pk, deleted_id])

    def test_a_user_who_no_longer_matches_a_filter_is_removed(self):
        user = UserFactory()
        session = presence.start_session(user=user, at=NOW)
        cursor = current_cursor(now=NOW)
        presence.end_session(session=session, reason=SessionEndReason.LOGOUT, at=NOW)
        online_only = users_for_admin().filter(status_q(OnlineStatus.ONLINE, now=NOW))

        changes = changes_since(queryset=online_only, cursor=cursor, now=NOW)

        assert (changes.users, changes.removed_ids) == ([], [user.pk])

    def test_more_changes_than_the_limit_ask_for_a_resync(self, settings):
        settings.PRESENCE_FEED_MAX_CHANGES = 2
        cursor = current_cursor(now=NOW)
        UserFactory.create_batch(2)
        assert len(changes_since(queryset=user_directory(), cursor=cursor, now=NOW).users) == 2
        UserFactory()
        with pytest.raises(ResyncRequiredError):
            changes_since(queryset=user_directory(), cursor=cursor, now=NOW)

    @pytest.mark.parametrize("shared_read", [True, False], ids=["from-the-shared-read", "from-every-row"])
    def test_more_users_moved_by_the_clock_than_the_limit_ask_for_a_resync(self, settings, monkeypatch, shared_read):
        settings.PRESENCE_FEED_MAX_CHANGES = 2
        if not shared_read:
            monkeypatch.setattr(feed, "clock_crossings_for", lambda **kwargs: None)
        users = UserFactory.create_batch(3)
        for user in users:
            presence.start_session(user=user, at=NOW)
        cursor = current_cursor(now=NOW + timedelta(seconds=10))
        later = NOW + TIMEOUT + timedelta(seconds=1)  # all three time out, with no write
        with pytest.raises(ResyncRequiredError):
            changes_since(queryset=user_directory(), cursor=cursor, now=later)
        changes = changes_since(queryset=user_directory(), cursor=cursor, now=later, limit=3)
        assert sorted(user.pk for user in changes.users) == sorted(user.pk for user in users)

    def test_a_flood_of_changes_between_its_reads_asks_for_a_resync(self, settings):
        """The rows are read by the changed-ids condition again, a statement later: changes
        that land between the two count against the limit too."""
        settings.PRESENCE_FEED_MAX_CHANGES = 3
        cursor = current_cursor(now=NOW)
        UserFactory.create_batch(2)
        flooded = []

        def flood_after_the_tombstones(execute, sql, params, many, context):
            result = execute(sql, params, many, context)
            if "presence_tombstones" in sql and not flooded:
                flooded.append(UserFactory.create_batch(2))
            return result

        with connection.execute_wrapper(flood_after_the_tombstones), pytest.raises(ResyncRequiredError):
            changes_since(queryset=user_directory(), cursor=cursor, now=NOW)
        assert flooded, "the flood landed between the two reads"

    def test_a_change_between_its_reads_is_in_this_answer_or_the_next(self):
        leaving, arriving = UserFactory(), UserFactory()
        session = presence.start_session(user=leaving, at=NOW)
        cursor = current_cursor(now=NOW)
        presence.start_session(user=arriving, at=NOW)
        online_only = users_for_admin().filter(status_q(OnlineStatus.ONLINE, now=NOW))
        moved = []

        def sign_out_after_the_tombstones(execute, sql, params, many, context):
            result = execute(sql, params, many, context)
            if "presence_tombstones" in sql and not moved:
                moved.append(presence.end_session(session=session, reason=SessionEndReason.LOGOUT, at=NOW))
            return result

        with connection.execute_wrapper(sign_out_after_the_tombstones):
            changes = changes_since(queryset=online_only, cursor=cursor, now=NOW)
        assert moved
        assert ([user.pk for user in changes.users], changes.removed_ids) == ([arriving.pk], [])
        # The sign-out came after the changes were read: the next poll names it.
        after = changes_since(queryset=online_only, cursor=changes.cursor, now=NOW)
        assert (after.users, after.removed_ids) == ([], [leaving.pk])


@pytest.mark.django_db
class TestTheClocksCrossingsReadOnceForEveryPoller:
    """users.selectors.feed.ClockCrossings: the present rows near a limit, read once and
    shared, in place of a read of every present user's row per poll."""

    @pytest.fixture
    def reads(self, monkeypatch):
        taken = []
        read = feed.read_clock_crossings

        def counted(**kwargs):
            taken.append(read(**kwargs))
            return taken[-1]

        monkeypatch.setattr(feed, "read_clock_crossings", counted)
        return taken

    def test_polls_in_a_read_s_reach_share_it_across_processes(self, reads):
        users = UserFactory.create_batch(3)
        with time_machine.travel(NOW, tick=False) as clock:
            for user in users:
                presence.start_session(user=user)
            cursor = current_cursor(now=timezone.now())
            for _ in range(4):
                clock.shift(10)
                cursor = changes_since(queryset=user_directory(), cursor=cursor, now=timezone.now()).cursor
            assert len(reads) == 1
            feed.forget_clock_crossings()  # another process: it finds the read in the cache
            clock.shift(10)
            changes_since(queryset=user_directory(), cursor=cursor, now=timezone.now())
            assert len(reads) == 1

    def test_a_read_serves_no_poll_past_what_it_can_know(self, reads):
        quiet, talkative = UserFactory(), UserFactory()
        with time_machine.travel(NOW, tick=False) as clock:
            presence.start_session(user=quiet)
            talking = presence.start_session(user=talkative)
            cursor = current_cursor(now=timezone.now())
            shown = []
            for _ in range(9):  # a poll every 20 s; the talkative user heartbeats between them
                clock.shift(20)
                presence.record_activity(user=talkative, session=talking, active=True)
                changes = changes_since(queryset=user_directory(), cursor=cursor, now=timezone.now())
                shown.append({user.pk: effective_status(user=user, now=timezone.now()) for user in changes.users})
                cursor = changes.cursor

        # The quiet user timed out at 120 s, past what the first read (at 20 s) could know.
        assert [polled.get(quiet.pk) for polled in shown][5:7] == [OnlineStatus.OFFLINE] * 2  # the window overlaps
        assert all(polled.get(talkative.pk, OnlineStatus.ONLINE) == OnlineStatus.ONLINE for polled in shown)
        # Each read served polls up to a minute after it at most: a new one came by then.
        times = [NOW, *(read.taken_at for read in reads), NOW + timedelta(seconds=180)]
        assert max(later - earlier for earlier, later in itertools.pairwise(times)) <= timedelta(seconds=60)
        assert 2 <= len(reads) < 9

    def test_polls_answer_as_a_read_of_every_row_would_through_logins_activity_and_sweeps(self, reads, monkeypatch):
        """Three pollers a few seconds apart, users logging in and out, typing, idling,
        reporting away, writes committed late, sweeps: every poll finds what a read of every
        present row finds."""
        chooser = random.Random(22)
        users = UserFactory.create_batch(24)
        sessions = {}
        polls, moved_by_the_clock = 0, 0
        with time_machine.travel(NOW, tick=False) as clock:
            for user in users:
                sessions[user.pk] = presence.start_session(user=user)
            cursors = [current_cursor(now=timezone.now())] * 3
            for step in range(120):
                clock.shift(chooser.choice([1, 2, 5, 10, 20, 45]))
                for user in chooser.sample(users, 3):
                    _act(chooser, user, sessions)
                if chooser.random() < 0.1:
                    presence.mark_inactive_users_offline()
                now, poller = timezone.now(), step % 3
                answer = changes_since(queryset=users_for_admin(), cursor=cursors[poller], now=now)
                with monkeypatch.context() as every_row:
                    every_row.setattr(feed, "clock_crossings_for", lambda **kwargs: None)
                    truth = changes_since(queryset=users_for_admin(), cursor=cursors[poller], now=now)
                assert sorted(u.pk for u in answer.users) == sorted(u.pk for u in truth.users), now
                assert answer.removed_ids == truth.removed_ids
                polls += 1
                moved_by_the_clock += any(
                    effective_status(user=u, now=now) != effective_status(user=u, now=cursors[poller].at)
                    for u in truth.users
                )
                cursors[poller] = answer.cursor

        assert 1 < len(reads) < polls * 0.8, "reads were shared by polls, and renewed"
        assert moved_by_the_clock > 5, "the clock moved users between polls"


def _act(chooser, user, sessions):
    session = sessions[user.pk]
    action = chooser.choice(["input", "idle", "away", "away", "late", "logout", "login", "nothing"])
    if action == "logout" and session.revoked_at is None:
        presence.end_session(session=session, reason=SessionEndReason.LOGOUT)
    elif action == "login" or session.revoked_at is not None:
        sessions[user.pk] = presence.start_session(user=User.objects.get(pk=user.pk))
    elif action != "nothing":
        reported = ReportedStatus.AWAY if action == "away" else None
        # "late": a heartbeat that waited on a lock for 90 s, longer than the transition margin.
        at = timezone.now() - timedelta(seconds=90 if action == "late" else 0)
        loaded = PresenceSession.objects.select_related("user").get(pk=session.pk)
        presence.record_activity(
            user=loaded.user, session=loaded, active=action in ("input", "late"), reported_status=reported, at=at
        )


def _in_thread(work):
    def run():
        try:
            work()
        finally:
            connections.close_all()

    return threading.Thread(target=run)


def _row(user, now):
    """What an admin's list shows of `user`."""
    shown = presence_shown_to(viewer=StaffFactory.build(pk=-1), user=user, now=now)
    return shown, user.manual_status, user.share_presence


def _truth(now):
    return {user.pk: _row(user, now) for user in users_for_admin()}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
class TestFeedUnderConcurrentWritesOnPostgres:
    def test_a_change_that_commits_after_a_poll_read_past_it_is_in_the_next_poll(self):
        """The classic timestamp-cursor bug: a transaction takes its place in line early and
        commits late. The counter's row lock makes a later writer wait for it, so a poll
        never sees the later change without the earlier one."""
        early, late = UserFactory(), UserFactory()
        cursor = current_cursor(now=timezone.now())
        early_took_its_id, release_early = threading.Event(), threading.Event()

        def early_writer():
            with transaction.atomic():
                presence.start_session(user=early)
                early_took_its_id.set()
                release_early.wait(timeout=10)

        writers = [_in_thread(early_writer)]
        writers[0].start()
        assert early_took_its_id.wait(timeout=10)
        writers.append(_in_thread(lambda: presence.start_session(user=late)))
        writers[1].start()  # waits for the counter row until the early writer commits
        first = changes_since(queryset=users_for_admin(), cursor=cursor, now=timezone.now())
        release_early.set()
        for writer in writers:
            writer.join(timeout=10)
        second = changes_since(queryset=users_for_admin(), cursor=first.cursor, now=timezone.now())

        assert [user.pk for user in first.users] == []
        assert {user.pk for user in second.users} == {early.pk, late.pk}

    def test_a_poller_following_the_cursor_ends_with_the_databases_view(self):
        users = UserFactory.create_batch(12)
        sessions = {user.pk: [presence.start_session(user=user)] for user in users}
        cursor = current_cursor(now=timezone.now())
        view = _truth(cursor.at)
        done = threading.Event()

        def writer(seed):
            chooser = random.Random(seed)
            for _ in range(25):
                user = chooser.choice(users)
                live = [s for s in sessions[user.pk] if s.revoked_at is None]
                action = chooser.choice(["login", "logout", "report", "manual", "share"])
                if action == "login" or not live:
                    sessions[user.pk].append(presence.start_session(user=User.objects.get(pk=user.pk)))
                elif action == "logout":
                    presence.end_session(session=chooser.choice(live), reason=SessionEndReason.LOGOUT)
                elif action == "report":
                    session = PresenceSession.objects.select_related("user").get(pk=chooser.choice(live).pk)
                    presence.record_activity(
                        user=session.user,
                        session=session,
                        active=False,
                        reported_status=chooser.choice(ReportedStatus.values),
                    )
                elif action == "manual":
                    presence.set_manual_status(user=user, status=chooser.choice([None, *ReportedStatus.values]))
                else:
                    presence.set_share_presence(user=user, share=chooser.choice([True, False]))

        def poller():
            nonlocal cursor
            while True:
                finished = done.is_set()
                changes = changes_since(queryset=users_for_admin(), cursor=cursor, now=timezone.now())
                for user in changes.users:
                    view[user.pk] = _row(user, changes.cursor.at)
                polls.append(len(changes.users))
                cursor = changes.cursor
                if finished:
                    return
                time.sleep(0.005)

        polls = []
        writers = [_in_thread(lambda seed=seed: writer(seed)) for seed in range(6)]
        follower = _in_thread(poller)
        follower.start()
        for thread in writers:
            thread.start()
        for thread in writers:
            thread.join(timeout=60)
        done.set()
        follower.join(timeout=60)

        assert len(polls) > 3, "the poller ran while the writers did"
        assert view == _truth(cursor.at)
        assert {shown.status for shown, _, _ in view.values()} >= {OnlineStatus.ONLINE, OnlineStatus.AWAY}
