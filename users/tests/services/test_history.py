"""Presence history, write side (users.services.history, called by users.services.presence
and the sweep): intervals per transition, nothing per heartbeat, per-minute counts, pruning."""

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from users import tasks
from users.models import OnlineStatus, PresenceCount, PresenceInterval, PresenceSession, SessionEndReason, User
from users.services import history, presence
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db
NOW = timezone.now().replace(second=0, microsecond=0)
TIMEOUT = timedelta(seconds=120)
AWAY_AFTER = timedelta(seconds=300)


def intervals(user):
    """The user's intervals, oldest first, as (status, started_at, ended_at)."""
    rows = PresenceInterval.objects.filter(user=user).order_by("started_at", "pk")
    return list(rows.values_list("status", "started_at", "ended_at"))


def reload(session):
    return PresenceSession.objects.select_related("user").get(pk=session.pk)


def touch(session, *, at, active=True, reported_status=None):
    """A request on `session`, with the rows loaded fresh as authentication loads them."""
    session = reload(session)
    return presence.record_activity(
        user=session.user, session=session, active=active, reported_status=reported_status, at=at
    )


class TestTransitions:
    def test_a_login_opens_an_online_interval(self, user):
        presence.start_session(user=user, at=NOW)
        assert intervals(user) == [("online", NOW, None)]

    def test_an_away_report_closes_online_and_opens_away(self, user):
        session = presence.start_session(user=user, at=NOW)
        touch(session, at=NOW + timedelta(seconds=10), active=False, reported_status="away")
        assert intervals(user) == [
            ("online", NOW, NOW + timedelta(seconds=10)),
            ("away", NOW + timedelta(seconds=10), None),
        ]

    def test_back_online_opens_another_online_interval(self, user):
        session = presence.start_session(user=user, at=NOW)
        touch(session, at=NOW + timedelta(seconds=10), active=False, reported_status="away")
        touch(session, at=NOW + timedelta(seconds=20), reported_status="online")
        assert [(status, ended is None) for status, _, ended in intervals(user)] == [
            ("online", False),
            ("away", False),
            ("online", True),
        ]

    def test_logout_closes_the_interval(self, user):
        session = presence.start_session(user=user, at=NOW)
        presence.end_session(session=session, reason=SessionEndReason.LOGOUT, at=NOW + timedelta(seconds=30))
        assert intervals(user) == [("online", NOW, NOW + timedelta(seconds=30))]

    def test_with_two_devices_closing_one_keeps_the_user_online_in_one_interval(self, user):
        phone = presence.start_session(user=user, at=NOW)
        presence.start_session(user=user, at=NOW + timedelta(seconds=5))
        presence.end_session(session=phone, reason=SessionEndReason.LOGOUT, at=NOW + timedelta(seconds=10))
        assert intervals(user) == [("online", NOW, None)]

    def test_a_manual_away_and_its_clearing_are_recorded(self, user):
        presence.start_session(user=user, at=NOW)
        with time_machine.travel(NOW + timedelta(seconds=30), tick=False):
            presence.set_manual_status(user=user, status="away")
        with time_machine.travel(NOW + timedelta(seconds=60), tick=False):
            presence.set_manual_status(user=user, status=None)
        assert intervals(user) == [
            ("online", NOW, NOW + timedelta(seconds=30)),
            ("away", NOW + timedelta(seconds=30), NOW + timedelta(seconds=60)),
            ("online", NOW + timedelta(seconds=60), None),
        ]

    def test_an_admin_setting_away_then_offline_is_recorded(self, user):
        presence.start_session(user=user, at=NOW)
        presence.admin_set_status(user=user, status="away", at=NOW + timedelta(seconds=5))
        presence.admin_set_status(user=user, status="offline", at=NOW + timedelta(seconds=9))
        assert intervals(user) == [
            ("online", NOW, NOW + timedelta(seconds=5)),
            ("away", NOW + timedelta(seconds=5), NOW + timedelta(seconds=9)),
        ]


class TestHeartbeatsWriteNoHistory:
    def test_a_fresh_heartbeat_runs_no_query_at_all(self, user, settings):
        settings.PRESENCE_WRITE_GRANULARITY = 25
        session = reload(presence.start_session(user=user, at=NOW))
        with CaptureQueriesContext(connection) as queries:
            written = presence.record_activity(
                user=session.user,
                session=session,
                active=True,
                reported_status="online",
                at=NOW + timedelta(seconds=24),
            )
        assert not written
        assert len(queries) == 0

    def test_a_heartbeat_that_changes_no_state_writes_last_seen_and_never_touches_the_history(self, user, settings):
        settings.PRESENCE_WRITE_GRANULARITY = 25
        session = presence.start_session(user=user, at=NOW)
        before = intervals(user)
        with CaptureQueriesContext(connection) as queries:
            assert touch(session, at=NOW + timedelta(seconds=30), reported_status="online")
        assert User.objects.get(pk=user.pk).last_seen == NOW + timedelta(seconds=30)  # it did write
        assert [q["sql"] for q in queries if "presence_intervals" in q["sql"]] == []
        assert intervals(user) == before

    def test_socket_pings_touch_no_history(self, user):
        session = presence.start_session(user=user, at=NOW)
        with CaptureQueriesContext(connection) as queries:
            presence.touch_sessions(session_ids=[session.pk], at=NOW + timedelta(seconds=30))
        assert [q["sql"] for q in queries if "presence_intervals" in q["sql"]] == []


class TestTheSweep:
    def test_a_stale_users_interval_ends_at_last_seen_plus_the_timeout_not_at_the_sweep(self, user):
        presence.start_session(user=user, at=NOW)
        presence.mark_inactive_users_offline(now=NOW + timedelta(minutes=10))
        assert intervals(user) == [("online", NOW, NOW + TIMEOUT)]

    def test_the_clock_turning_a_user_away_is_recorded_by_the_next_sweep_when_it_happened(self, user):
        session = presence.start_session(user=user, at=NOW)
        # A socket's pings keep the connection alive with no input: away after AWAY_AFTER.
        for minute in (1, 2, 3, 4, 5, 6):
            presence.touch_sessions(session_ids=[session.pk], at=NOW + timedelta(minutes=minute))
        assert intervals(user) == [("online", NOW, None)]  # nothing wrote it yet

        presence.mark_inactive_users_offline(now=NOW + timedelta(minutes=6, seconds=30))

        assert intervals(user) == [("online", NOW, NOW + AWAY_AFTER), ("away", NOW + AWAY_AFTER, None)]

    def test_a_writer_that_finds_the_clock_turned_a_user_away_dates_it_when_it_happened(self, user):
        session = presence.start_session(user=user, at=NOW)
        other_device = presence.start_session(user=user, at=NOW)
        for minute in (1, 2, 3, 4, 5, 6):
            presence.touch_sessions(session_ids=[session.pk], at=NOW + timedelta(minutes=minute))
        # The other device is ended before any sweep: the slow path, with no input.
        presence.end_session(session=reload(other_device), reason="forced", at=NOW + timedelta(minutes=6))
        assert intervals(user) == [("online", NOW, NOW + AWAY_AFTER), ("away", NOW + AWAY_AFTER, None)]

    def test_a_sweep_reads_only_users_whose_input_went_stale_since_the_last_sweep_and_a_span_before(self):
        """Each sweep passes the previous sweep's time: users the clock turned away long before
        it were recorded then (or by their own writes) and are not read again; those within
        RECHECKED_SWEEPS_SPAN before it are, in case another writer held their row then."""
        from users.services.history import RECHECKED_SWEEPS_SPAN

        recent, within_span, long_ago = UserFactory(), UserFactory(), UserFactory()
        turned_at = {
            recent.pk: NOW - timedelta(seconds=30),
            within_span.pk: NOW - timedelta(minutes=1) - RECHECKED_SWEEPS_SPAN + timedelta(seconds=30),
            long_ago.pk: NOW - timedelta(minutes=1) - RECHECKED_SWEEPS_SPAN - timedelta(seconds=30),
        }
        for user_id, at in turned_at.items():
            session = presence.start_session(user=User.objects.get(pk=user_id), at=at - AWAY_AFTER)
            presence.touch_sessions(session_ids=[session.pk], at=NOW - timedelta(seconds=5))  # socket, no input
        presence.mark_inactive_users_offline(now=NOW - timedelta(minutes=1))  # an earlier sweep, told nothing
        PresenceInterval.objects.filter(status="away").delete()  # as if it had not seen them
        PresenceInterval.objects.update(ended_at=None)

        presence.mark_inactive_users_offline(now=NOW)

        assert intervals(recent)[-1] == ("away", turned_at[recent.pk], None)
        assert intervals(within_span)[-1] == ("away", turned_at[within_span.pk], None)
        assert intervals(long_ago) == [("online", turned_at[long_ago.pk] - AWAY_AFTER, None)]  # not read again

    def test_without_a_previous_sweep_every_user_the_clock_turned_away_is_recorded(self, user):
        session = presence.start_session(user=user, at=NOW - timedelta(days=1))
        presence.touch_sessions(session_ids=[session.pk], at=NOW - timedelta(seconds=5))
        presence.mark_inactive_users_offline(now=NOW)
        assert intervals(user)[-1] == ("away", NOW - timedelta(days=1) + AWAY_AFTER, None)

    def test_a_user_who_lost_one_of_two_sessions_is_recorded_as_the_rest_reports(self, user):
        presence.start_session(user=user, at=NOW - TIMEOUT * 3)
        laptop = presence.start_session(user=user, at=NOW - timedelta(seconds=10))
        touch(laptop, at=NOW - timedelta(seconds=5), active=False, reported_status="away")
        presence.mark_inactive_users_offline(now=NOW)
        assert [(status, ended is None) for status, _, ended in intervals(user)][-1] == ("away", True)

    def test_sweeps_write_no_counts(self, user):
        presence.start_session(user=user, at=NOW)
        presence.mark_inactive_users_offline(now=NOW + timedelta(seconds=10))
        assert not PresenceCount.objects.exists()

    @staticmethod
    def _sweep_statements(*, users: int, at) -> int:
        """A sweep over `users` whom the clock turned away; how many statements it ran."""
        sessions = [presence.start_session(user=UserFactory(), at=at - AWAY_AFTER * 2) for _ in range(users)]
        presence.touch_sessions(session_ids=[session.pk for session in sessions], at=at - timedelta(seconds=5))
        with CaptureQueriesContext(connection) as queries:
            presence.mark_inactive_users_offline(now=at)
        assert PresenceInterval.objects.filter(status="away", ended_at__isnull=True).count() == users
        PresenceInterval.objects.all().delete()
        PresenceSession.objects.update(ended_at=at)
        User.objects.update(online_status=OnlineStatus.OFFLINE)
        return len(queries)

    def test_recording_the_clocks_transitions_runs_a_fixed_number_of_statements(self):
        one = self._sweep_statements(users=1, at=NOW)
        fifty = self._sweep_statements(users=50, at=NOW + timedelta(hours=1))
        assert one == fifty, (one, fifty)


class TestManyUsersInOneCall:
    def test_each_closed_interval_ends_at_its_own_users_moment(self):
        """One write recording many users (a sweep's regrouped users) closes their intervals in
        one statement, each at its user's moment: the clock's for users it turned away, the
        write's for the rest, whether users share a moment or not."""
        opened = NOW - timedelta(minutes=20)
        users = [UserFactory() for _ in range(5)]
        for user in users:
            presence.start_session(user=user, at=opened)
        rows = [User.objects.get(pk=user.pk) for user in users]
        idle_for = [AWAY_AFTER + timedelta(minutes=1), AWAY_AFTER + timedelta(minutes=3), AWAY_AFTER]
        for row, idle in zip(rows[:3], idle_for, strict=True):  # online, no input since: the clock turned them away
            row.last_seen, row.last_active = NOW, NOW - idle
        rows[3].last_seen = rows[3].last_active = NOW  # away by its own choice: at this write
        rows[3].manual_status = "away"
        rows[4].last_seen = rows[4].last_active = NOW - TIMEOUT * 2  # timed out: offline at this write

        history.record_shown_statuses(users=rows, at=NOW)

        online_ended = [intervals(user)[0][2] for user in users]
        assert online_ended == [
            NOW - timedelta(minutes=1),
            NOW - timedelta(minutes=3),
            NOW,
            NOW,
            NOW,
        ]
        assert [intervals(user)[-1][0::2] for user in users] == [("away", None)] * 4 + [("online", NOW)]


class TestCounts:
    def test_the_beat_task_writes_the_users_per_status_of_its_minute_the_last_of_a_minute_winning(self):
        online, away = UserFactory(), UserFactory()
        presence.start_session(user=online, at=NOW)
        touch(presence.start_session(user=away, at=NOW), at=NOW, active=False, reported_status="away")
        UserFactory()  # offline
        for at in (NOW + timedelta(seconds=10), NOW + timedelta(seconds=40), NOW + timedelta(minutes=10)):
            with time_machine.travel(at, tick=False):
                tasks.record_presence_counts()
            if at == NOW + timedelta(seconds=10):
                presence.end_session(session=PresenceSession.objects.get(user=away), reason="logout", at=at)

        counts = list(PresenceCount.objects.order_by("at").values_list("at", "online", "away", "offline"))
        # The second count of the first minute (after the away user left) replaced the first;
        # ten minutes on, nobody is connected any more.
        assert counts == [(NOW, 1, 0, 2), (NOW + timedelta(minutes=10), 0, 0, 3)]


class TestRetention:
    def test_prune_deletes_what_ended_or_was_counted_before_the_retention(self, user, settings):
        settings.PRESENCE_HISTORY_DAYS = 30
        old, kept = NOW - timedelta(days=31), NOW - timedelta(days=29)
        PresenceInterval.objects.create(user=user, status="online", started_at=old, ended_at=old + timedelta(hours=1))
        PresenceInterval.objects.create(user=user, status="away", started_at=kept, ended_at=kept + timedelta(hours=1))
        # Open for 40 days and still going: it is today's presence too.
        PresenceInterval.objects.create(user=UserFactory(), status="online", started_at=NOW - timedelta(days=40))
        PresenceCount.objects.create(at=old, online=1, away=0, offline=0)
        PresenceCount.objects.create(at=kept, online=2, away=0, offline=0)

        with time_machine.travel(NOW, tick=False):
            tasks.prune_presence_history()

        assert sorted(PresenceInterval.objects.values_list("started_at", flat=True)) == [NOW - timedelta(days=40), kept]
        assert list(PresenceCount.objects.values_list("at", flat=True)) == [kept]

    def test_deleting_a_user_deletes_their_history(self, user):
        presence.start_session(user=user, at=NOW)
        other = UserFactory()
        presence.start_session(user=other, at=NOW)
        user.delete()
        assert list(PresenceInterval.objects.values_list("user_id", flat=True)) == [other.pk]


@pytest.mark.django_db
def test_a_timed_out_user_who_comes_back_before_any_sweep_keeps_the_gap():
    user = UserFactory()
    with time_machine.travel(NOW, tick=False):
        first = presence.start_session(user=user)
    back = NOW + timedelta(seconds=settings.PRESENCE_INACTIVITY_TIMEOUT + 300)
    with time_machine.travel(back, tick=False):
        session = PresenceSession.objects.select_related("user").get(pk=first.pk)
        presence.record_activity(user=session.user, session=session, active=True, at=back)
    rows = list(PresenceInterval.objects.filter(user=user).order_by("started_at").values_list("started_at", "ended_at"))
    timed_out = NOW + timedelta(seconds=settings.PRESENCE_INACTIVITY_TIMEOUT)
    assert rows == [(NOW, timed_out), (back, None)]
