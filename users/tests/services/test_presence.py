import itertools
import threading
import time
from datetime import timedelta

import pytest
import time_machine
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from offchat_backend.tests.support import waiting_on_a_lock
from users.exceptions import NoLiveSessionError
from users.models import (
    OnlineStatus,
    PresenceInterval,
    PresenceSession,
    PresenceSweep,
    ReportedStatus,
    SessionEndReason,
    User,
)
from users.presence_rules import effective_status
from users.selectors.accounts import online_users_for_admin
from users.services import presence
from users.tests.factories import UserFactory
from users.tests.helpers import planned_without_seqscan, stored

NOW = timezone.now().replace(microsecond=0)
TIMEOUT = timedelta(seconds=120)


@pytest.fixture(autouse=True)
def clock():
    """Every test starts at NOW, however long the run took to reach it: a write dated NOW
    is never one that "took longer than the margin" (record_activity takes a feed id then)."""
    with time_machine.travel(NOW, tick=True):
        yield


def shown(user, at=NOW):
    return effective_status(user=User.objects.get(pk=user.pk), now=at)


def feed_id(user):
    return User.objects.get(pk=user.pk).presence_update_id


def sign_in(user, at=NOW):
    return presence.start_session(user=user, at=at)


def reload(session):
    return PresenceSession.objects.select_related("user").get(pk=session.pk)


def touch(session, *, at, active=True, reported_status=None):
    """A request on `session`, with the rows loaded fresh as authentication loads them."""
    session = reload(session)
    return presence.record_activity(
        user=session.user, session=session, active=active, reported_status=reported_status, at=at
    )


@pytest.mark.django_db
class TestSessions:
    def test_a_login_starts_a_live_session_and_brings_the_user_online(self):
        user = UserFactory(last_seen=NOW - timedelta(hours=3))
        before = feed_id(user)
        session = sign_in(user)
        assert session.is_live and session.last_seen == NOW
        assert stored(user) == (OnlineStatus.ONLINE, NOW)
        assert shown(user) == OnlineStatus.ONLINE
        assert feed_id(user) > before

    def test_logging_out_one_device_leaves_the_user_online_on_the_other(self):
        user = UserFactory()
        phone, laptop = sign_in(user), sign_in(user)

        assert presence.end_session(session=phone, reason=SessionEndReason.LOGOUT, at=NOW + timedelta(seconds=5))

        assert stored(user) == (OnlineStatus.ONLINE, NOW + timedelta(seconds=5))
        assert reload(phone).revoked_at is not None and reload(laptop).revoked_at is None
        presence.end_session(session=laptop, reason=SessionEndReason.LOGOUT, at=NOW + timedelta(seconds=9))
        assert stored(user) == (OnlineStatus.OFFLINE, NOW + timedelta(seconds=9))

    def test_ending_a_revoked_session_again_changes_nothing(self):
        session = sign_in(UserFactory())
        presence.end_session(session=session, reason=SessionEndReason.LOGOUT, at=NOW)
        revoked_at = reload(session).revoked_at
        assert not presence.end_session(session=session, reason=SessionEndReason.FORCED, at=NOW + TIMEOUT)
        assert reload(session).revoked_at == revoked_at

    def test_a_forced_end_by_an_admin_is_not_the_users_own_last_sighting(self):
        user = UserFactory()
        session = sign_in(user)
        presence.end_session(session=session, reason=SessionEndReason.FORCED, at=NOW + timedelta(minutes=1))
        assert stored(user) == (OnlineStatus.OFFLINE, NOW)


@pytest.mark.django_db
class TestRecordActivity:
    def test_a_fresh_request_writes_nothing_and_runs_no_query(self, settings):
        settings.PRESENCE_WRITE_GRANULARITY = 25
        session = sign_in(UserFactory())
        session = reload(session)
        with CaptureQueriesContext(connection) as queries:
            written = presence.record_activity(
                user=session.user, session=session, active=True, at=NOW + timedelta(seconds=24)
            )
        assert not written
        assert len(queries) == 0
        assert stored(session.user) == (OnlineStatus.ONLINE, NOW)

    def test_a_heartbeat_after_the_write_granularity_moves_last_seen_without_a_feed_id(self, settings):
        settings.PRESENCE_WRITE_GRANULARITY = 25
        session = sign_in(UserFactory())
        before = feed_id(session.user)
        assert touch(session, at=NOW + timedelta(seconds=25), reported_status=ReportedStatus.ONLINE)
        assert stored(session.user) == (OnlineStatus.ONLINE, NOW + timedelta(seconds=25))
        assert reload(session).last_seen == NOW + timedelta(seconds=25)
        assert feed_id(session.user) == before  # a plain heartbeat is no change to pollers

    def test_other_requests_wait_a_heartbeat_interval_longer_before_writing(self, settings):
        settings.PRESENCE_WRITE_GRANULARITY = 25
        settings.PRESENCE_HEARTBEAT_INTERVAL = 30
        session = sign_in(UserFactory())
        assert not touch(session, at=NOW + timedelta(seconds=54))  # the heartbeats do the writing
        assert touch(session, at=NOW + timedelta(seconds=55))  # none came: the request writes
        assert stored(session.user) == (OnlineStatus.ONLINE, NOW + timedelta(seconds=55))

    def test_a_granularity_of_zero_writes_every_request(self, settings):
        settings.PRESENCE_WRITE_GRANULARITY = 0
        session = sign_in(UserFactory())
        assert touch(session, at=NOW + timedelta(seconds=1))
        assert touch(session, at=NOW + timedelta(seconds=2))

    def test_an_idle_ended_session_is_revived_by_its_next_request(self):
        user = UserFactory()
        session = sign_in(user)
        presence.mark_inactive_users_offline(now=NOW + TIMEOUT + timedelta(seconds=1))
        assert not reload(session).is_live and stored(user)[0] == OnlineStatus.OFFLINE
        before = feed_id(user)

        assert touch(session, at=NOW + timedelta(minutes=10))

        assert reload(session).is_live and reload(session).revoked_at is None
        assert stored(user) == (OnlineStatus.ONLINE, NOW + timedelta(minutes=10))
        assert feed_id(user) > before

    def test_a_revoked_session_writes_nothing(self):
        user = UserFactory()
        session = sign_in(user)
        presence.end_session(session=session, reason=SessionEndReason.LOGOUT, at=NOW + timedelta(seconds=1))
        session = reload(session)
        assert not presence.record_activity(user=user, session=session, active=True, at=NOW + timedelta(minutes=1))
        assert stored(user) == (OnlineStatus.OFFLINE, NOW + timedelta(seconds=1))

    def test_last_seen_never_moves_backwards(self):
        session = sign_in(UserFactory(), at=NOW)
        touch(session, at=NOW + timedelta(minutes=1))
        touch(session, at=NOW + timedelta(seconds=30), reported_status=OnlineStatus.AWAY)
        assert stored(session.user)[1] == NOW + timedelta(minutes=1)
        assert reload(session).last_seen == NOW + timedelta(minutes=1)

    def test_a_heartbeat_within_the_margin_of_the_timeout_takes_a_feed_id(self, settings):
        """A poll may have shown the user offline before this heartbeat committed: a feed id
        makes the next poll read the user again."""
        settings.PRESENCE_WRITE_GRANULARITY = 0
        session = sign_in(UserFactory(), at=NOW)
        before = feed_id(session.user)
        touch(session, at=NOW + TIMEOUT / 2 - timedelta(seconds=1), active=False)
        assert feed_id(session.user) == before  # far from the timeout: no id
        touch(session, at=NOW + TIMEOUT - timedelta(seconds=2), active=False)
        assert feed_id(session.user) == before  # 59 s since the last one: still far
        touch(session, at=NOW + TIMEOUT - timedelta(seconds=2) + timedelta(seconds=61), active=False)
        assert feed_id(session.user) > before  # 61 s since: within the 60 s margin of the timeout

    def test_a_plain_request_keeps_the_report_a_concurrent_heartbeat_wrote(self):
        session = sign_in(UserFactory())
        loaded_before_the_heartbeat = reload(session)
        touch(session, at=NOW + timedelta(seconds=1), active=False, reported_status=OnlineStatus.AWAY)

        presence.record_activity(
            user=loaded_before_the_heartbeat.user,
            session=loaded_before_the_heartbeat,
            active=True,
            at=NOW + timedelta(seconds=40),
        )

        assert reload(session).reported_status == OnlineStatus.AWAY
        assert shown(session.user, NOW + timedelta(seconds=40)) == OnlineStatus.AWAY

    def test_a_write_slower_than_the_margin_takes_a_feed_id(self, settings):
        settings.PRESENCE_WRITE_GRANULARITY = 0
        session = sign_in(UserFactory(), at=NOW)
        before = feed_id(session.user)
        # The request took its timestamp 61 s before this write commits (margin: 60 s).
        with time_machine.travel(NOW + timedelta(seconds=71), tick=False):
            assert touch(session, at=NOW + timedelta(seconds=10))
        assert feed_id(session.user) > before


@pytest.mark.django_db
class TestAway:
    def test_a_user_with_no_input_for_the_away_delay_is_away_while_connected(self, settings):
        settings.PRESENCE_WRITE_GRANULARITY = 0
        session = sign_in(UserFactory(), at=NOW)
        for seconds in range(30, 331, 30):  # heartbeats say the connection lives; nobody types
            touch(session, at=NOW + timedelta(seconds=seconds), active=False)
        assert shown(session.user, NOW + timedelta(seconds=299)) == OnlineStatus.ONLINE
        assert shown(session.user, NOW + timedelta(seconds=300)) == OnlineStatus.AWAY
        touch(session, at=NOW + timedelta(seconds=331))  # input
        assert shown(session.user, NOW + timedelta(seconds=331)) == OnlineStatus.ONLINE

    def test_a_session_reporting_away_makes_the_user_away_at_once(self):
        session = sign_in(UserFactory())
        touch(session, at=NOW + timedelta(seconds=1), active=False, reported_status=OnlineStatus.AWAY)
        assert stored(session.user)[0] == OnlineStatus.AWAY
        assert shown(session.user, NOW + timedelta(seconds=1)) == OnlineStatus.AWAY
        touch(session, at=NOW + timedelta(seconds=2), reported_status=OnlineStatus.ONLINE)
        assert shown(session.user, NOW + timedelta(seconds=2)) == OnlineStatus.ONLINE

    def test_online_on_one_device_beats_away_on_another(self):
        user = UserFactory()
        phone, laptop = sign_in(user), sign_in(user)
        touch(phone, at=NOW + timedelta(seconds=1), active=False, reported_status=OnlineStatus.AWAY)
        assert shown(user, NOW + timedelta(seconds=1)) == OnlineStatus.ONLINE
        touch(laptop, at=NOW + timedelta(seconds=2), active=False, reported_status=OnlineStatus.AWAY)
        assert shown(user, NOW + timedelta(seconds=2)) == OnlineStatus.AWAY

    def test_a_manual_status_holds_against_heartbeats_until_cleared(self, settings):
        settings.PRESENCE_WRITE_GRANULARITY = 0
        session = sign_in(UserFactory())
        user = session.user
        assert presence.set_manual_status(user=user, status=OnlineStatus.AWAY)
        touch(session, at=NOW + timedelta(seconds=30), reported_status=OnlineStatus.ONLINE)
        assert shown(user, NOW + timedelta(seconds=30)) == OnlineStatus.AWAY
        assert not presence.set_manual_status(user=user, status=OnlineStatus.AWAY)  # no-op, no write
        assert presence.set_manual_status(user=user, status=None)
        assert shown(user, NOW + timedelta(seconds=30)) == OnlineStatus.ONLINE

    def test_a_manual_status_does_not_show_a_disconnected_user(self):
        user = UserFactory()
        presence.set_manual_status(user=user, status=OnlineStatus.ONLINE)
        assert shown(user) == OnlineStatus.OFFLINE


@pytest.mark.django_db
class TestAdminSetStatus:
    def test_offline_ends_live_sessions_without_revoking_them(self):
        user = UserFactory()
        session = sign_in(user)
        presence.admin_set_status(user=user, status=OnlineStatus.OFFLINE, at=NOW + timedelta(seconds=1))
        assert shown(user, NOW + timedelta(seconds=1)) == OnlineStatus.OFFLINE
        assert reload(session).end_reason == SessionEndReason.ADMIN and reload(session).revoked_at is None
        touch(session, at=NOW + timedelta(seconds=2))
        assert shown(user, NOW + timedelta(seconds=2)) == OnlineStatus.ONLINE

    @pytest.mark.parametrize("status", [OnlineStatus.ONLINE, OnlineStatus.AWAY])
    def test_online_or_away_for_a_user_with_no_live_session_is_refused_and_writes_nothing(self, status):
        user = UserFactory()
        session = sign_in(user, at=NOW)
        presence.end_session(session=session, reason=SessionEndReason.LOGOUT, at=NOW + timedelta(seconds=1))
        before = (stored(user), feed_id(user))
        with pytest.raises(NoLiveSessionError) as refused:
            presence.admin_set_status(user=user, status=status, at=NOW + timedelta(seconds=2))
        assert (refused.value.status, refused.value.code) == (409, "no_live_session")
        assert (stored(user), feed_id(user)) == before
        assert stored(user)[0] == OnlineStatus.OFFLINE
        assert shown(user, NOW + timedelta(seconds=2)) == OnlineStatus.OFFLINE

    def test_away_holds_until_the_users_own_activity(self, settings):
        settings.PRESENCE_WRITE_GRANULARITY = 0
        user = UserFactory()
        session = sign_in(user)
        before = feed_id(user)
        presence.admin_set_status(user=user, status=OnlineStatus.AWAY)
        assert feed_id(user) > before
        assert shown(user, NOW + timedelta(seconds=1)) == OnlineStatus.AWAY
        touch(session, at=NOW + timedelta(seconds=2))
        assert shown(user, NOW + timedelta(seconds=2)) == OnlineStatus.ONLINE


@pytest.mark.django_db
class TestSweep:
    @pytest.mark.parametrize(
        ("idle", "expected"),
        [
            (TIMEOUT - timedelta(seconds=1), OnlineStatus.ONLINE),
            (TIMEOUT, OnlineStatus.ONLINE),  # exactly two minutes idle is not yet "more than"
            (TIMEOUT + timedelta(seconds=1), OnlineStatus.OFFLINE),
        ],
    )
    def test_boundary_of_the_inactivity_timeout(self, idle, expected):
        user = UserFactory()
        session = sign_in(user)
        with time_machine.travel(NOW + idle, tick=False):
            presence.mark_inactive_users_offline()
        assert stored(user) == (expected, NOW)
        assert reload(session).is_live == (expected == OnlineStatus.ONLINE)

    def test_timeout_comes_from_settings(self, settings):
        settings.PRESENCE_INACTIVITY_TIMEOUT = 10
        user = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=NOW)
        assert presence.mark_inactive_users_offline(now=NOW + timedelta(seconds=11)) == 1
        assert stored(user)[0] == OnlineStatus.OFFLINE

    def test_sweeps_away_and_never_seen_users_and_counts_only_changes(self):
        stale = NOW - TIMEOUT - timedelta(seconds=1)
        away = UserFactory(online_status=OnlineStatus.AWAY, last_seen=stale)
        never_seen = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=None)
        already_offline = UserFactory(online_status=OnlineStatus.OFFLINE, last_seen=stale)
        active = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=NOW)

        assert presence.mark_inactive_users_offline(now=NOW) == 2

        assert stored(away) == (OnlineStatus.OFFLINE, stale)  # last_seen keeps the real last activity
        assert stored(never_seen) == (OnlineStatus.OFFLINE, None)
        assert stored(already_offline) == (OnlineStatus.OFFLINE, stale)
        assert stored(active) == (OnlineStatus.ONLINE, NOW)

    def test_ends_idle_sessions_and_keeps_a_user_with_a_live_one(self, settings):
        settings.PRESENCE_WRITE_GRANULARITY = 0
        user = UserFactory()
        forgotten_tab, phone = sign_in(user, at=NOW), sign_in(user, at=NOW)
        later = NOW + TIMEOUT + timedelta(seconds=30)
        touch(phone, at=later - timedelta(seconds=5), active=False, reported_status=OnlineStatus.AWAY)
        before = feed_id(user)

        assert presence.mark_inactive_users_offline(now=later) == 0

        assert reload(forgotten_tab).end_reason == SessionEndReason.IDLE
        assert reload(forgotten_tab).revoked_at is None  # its tokens stay valid
        assert reload(phone).is_live
        # The tab that reported online is gone: what is left reports away.
        assert stored(user)[0] == OnlineStatus.AWAY
        assert feed_id(user) > before

    def test_every_user_it_changes_takes_a_feed_id_and_others_keep_theirs(self):
        stale = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=NOW - TIMEOUT - timedelta(seconds=1))
        active = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=NOW)
        before = {user.pk: feed_id(user) for user in (stale, active)}
        presence.mark_inactive_users_offline(now=NOW)
        assert feed_id(stale) > before[stale.pk]
        assert feed_id(active) == before[active.pk]

    @staticmethod
    def _sweep_statements(*, users: int, at) -> int:
        """A sweep over `users` who lost one of two sessions (the rest now reports away) and
        as many who lost their only one; how many statements it ran."""
        for _ in range(users):
            regrouped, stale = UserFactory(), UserFactory()
            sign_in(regrouped, at=at - TIMEOUT * 3)
            sign_in(stale, at=at - TIMEOUT * 3)
            touch(sign_in(regrouped, at=at - timedelta(seconds=10)), at=at, active=False, reported_status="away")
        with CaptureQueriesContext(connection) as queries:
            assert presence.mark_inactive_users_offline(now=at) == users
        assert User.objects.filter(online_status=OnlineStatus.AWAY).count() == users
        User.objects.filter(online_status=OnlineStatus.AWAY).update(online_status=OnlineStatus.OFFLINE)
        return len(queries)

    def test_runs_a_fixed_number_of_statements_whatever_the_number_of_users(self, settings):
        settings.PRESENCE_WRITE_GRANULARITY = 0
        one = self._sweep_statements(users=1, at=NOW)
        fifty = self._sweep_statements(users=50, at=NOW + TIMEOUT * 10)
        assert one == fifty, (one, fifty)

    def test_locks_rows_with_a_select_for_update_that_rechecks_last_seen(self):
        UserFactory.create_batch(3, online_status=OnlineStatus.ONLINE, last_seen=NOW - timedelta(hours=1))
        with CaptureQueriesContext(connection) as queries:
            assert presence.mark_inactive_users_offline(now=NOW) == 3
        # The sweep also reads users for the history (counts, the clock's transitions): the
        # one that picks stale users is the one comparing last_seen.
        selects = [
            q["sql"]
            for q in queries
            if q["sql"].startswith("SELECT") and 'FROM "users"' in q["sql"] and '"last_seen" <' in q["sql"]
        ]
        assert len(selects) == 1, selects
        if connection.vendor == "postgresql":
            assert selects[0].rstrip().endswith("FOR UPDATE")


@pytest.mark.django_db
class TestFeedIds:
    def test_ids_grow_with_each_change_and_profile_edits_count(self):
        user = UserFactory()
        first = feed_id(user)
        user.first_name = "Renamed"
        user.save()
        second = feed_id(user)
        presence.set_share_presence(user=user, share=False)
        third = feed_id(user)
        assert first < second < third
        assert not presence.set_share_presence(user=user, share=False)
        assert feed_id(user) == third

    def test_a_deleted_user_leaves_a_tombstone_that_the_sweep_prunes_later(self, settings):
        from users.models import PresenceTombstone

        user = UserFactory()
        user_id = user.pk
        user.delete()
        assert PresenceTombstone.objects.filter(user_id=user_id).exists()
        presence.mark_inactive_users_offline(now=timezone.now())
        assert PresenceTombstone.objects.filter(user_id=user_id).exists()
        later = timezone.now() + timedelta(seconds=settings.PRESENCE_FEED_MAX_AGE + 1)
        presence.mark_inactive_users_offline(now=later)
        assert not PresenceTombstone.objects.filter(user_id=user_id).exists()


def _close_connection_after(work):
    def run(*args):
        try:
            work(*args)
        finally:
            connections.close_all()

    return run


def _wait_until_blocked_on_a_lock(timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if waiting_on_a_lock():
            return
        time.sleep(0.02)
    raise AssertionError("the sweep never waited for the heartbeat's row lock")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
class TestSweepRacingHeartbeatOnPostgres:
    def test_heartbeat_committing_while_the_sweep_waits_keeps_the_user_online(self):
        """The sweep's SELECT ... FOR UPDATE re-checks its WHERE on the rows the heartbeat committed."""
        session = sign_in(UserFactory(), at=timezone.now() - TIMEOUT - timedelta(minutes=1))
        swept = []
        sweeper = threading.Thread(
            target=_close_connection_after(lambda: swept.append(presence.mark_inactive_users_offline()))
        )

        with transaction.atomic():
            touch(session, at=timezone.now())  # holds the session and user row locks until commit
            sweeper.start()
            _wait_until_blocked_on_a_lock()
        sweeper.join(timeout=10)

        assert swept == [0]
        assert stored(session.user)[0] == OnlineStatus.ONLINE
        assert reload(session).is_live

    def test_heartbeat_waiting_for_the_sweep_revives_the_session_and_ends_online(self):
        session = sign_in(UserFactory(), at=timezone.now() - TIMEOUT - timedelta(minutes=1))
        loaded_before_the_sweep = reload(session)
        heartbeat = threading.Thread(
            target=_close_connection_after(
                lambda: presence.record_activity(
                    user=loaded_before_the_sweep.user, session=loaded_before_the_sweep, active=True
                )
            )
        )

        with transaction.atomic():
            assert presence.mark_inactive_users_offline() == 1
            heartbeat.start()
            _wait_until_blocked_on_a_lock()
        heartbeat.join(timeout=10)

        assert stored(session.user)[0] == OnlineStatus.ONLINE
        assert reload(session).is_live

    def test_unordered_rounds_never_leave_a_heartbeating_user_offline(self):
        sessions = [sign_in(user) for user in UserFactory.create_batch(20)]
        for _ in range(10):
            stale = timezone.now() - TIMEOUT - timedelta(seconds=1)
            User.objects.update(online_status=OnlineStatus.ONLINE, last_seen=stale)
            PresenceSession.objects.update(last_seen=stale, ended_at=None)
            workers = [
                threading.Thread(target=_close_connection_after(lambda s=s: touch(s, at=timezone.now())))
                for s in sessions
            ] + [threading.Thread(target=_close_connection_after(lambda: presence.mark_inactive_users_offline()))]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(timeout=10)
            assert set(User.objects.values_list("online_status", flat=True)) == {OnlineStatus.ONLINE}
            assert not PresenceSession.objects.filter(ended_at__isnull=False).exists()


@pytest.mark.postgres
@pytest.mark.django_db
def test_sweep_update_can_read_only_the_present_part_of_the_table():
    with transaction.atomic():
        with CaptureQueriesContext(connection) as queries:
            presence.mark_inactive_users_offline(now=NOW)
        transaction.set_rollback(True)
    sweep_select = next(q["sql"] for q in queries if 'FROM "users"' in q["sql"])
    plan = planned_without_seqscan(sweep_select)
    # Either partial index of present users holds exactly the present part; on a tiny table
    # the planner may take the admin list's one (users_present_username_idx) for a bitmap.
    assert "users_present_status_idx" in plan or "users_present_username_idx" in plan, plan


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_admin_online_filter_can_use_the_same_index():
    plan = planned_without_seqscan(*online_users_for_admin().query.sql_with_params())
    # Either partial index of present users: this one, or the list's own in username order
    # (users/tests/selectors/test_accounts.py checks that a page reads that one, in order).
    assert "users_present_status_idx" in plan or "users_present_username_idx" in plan, plan


def statements_of(callable_):
    statements = []

    def record(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        callable_()
    return statements


def show_synchronous_commit():
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_activity_commits_without_waiting_for_the_disk_on_its_own_transaction_only(settings):
    settings.PRESENCE_WRITE_GRANULARITY = 0
    user = UserFactory()
    session = presence.start_session(user=user)
    relaxed_in_the_statement = "set_config('synchronous_commit', 'off', true)"

    # No status to change: one statement, which relaxes the commit of its own transaction.
    [statement] = statements_of(lambda: presence.record_activity(user=user, session=session, active=True))
    assert relaxed_in_the_statement in statement
    assert show_synchronous_commit() == "on"  # it ended with that transaction
    # A status to change: the transactional path, relaxed as before.
    changing = statements_of(
        lambda: presence.record_activity(user=user, session=session, active=False, reported_status="away")
    )
    assert "SET LOCAL synchronous_commit TO OFF" in changing

    with transaction.atomic():  # a caller's transaction
        inside = statements_of(lambda: presence.record_activity(user=user, session=session, active=True))
        assert show_synchronous_commit() == "on"
    assert not [sql for sql in inside if "synchronous_commit" in sql]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_one_statements_set_config_holds_until_its_transaction_commits(settings):
    """What the one-statement write relies on: set_config(..., true) inside a statement is
    SET LOCAL, still in force when the transaction commits (and PostgreSQL applies
    synchronous_commit as it stands at commit). A transaction that outlives the statement
    makes that visible; the write itself runs in autocommit, where the commit follows it."""
    settings.PRESENCE_WRITE_GRANULARITY = 0
    now = timezone.now()  # not NOW, taken at import: a write minutes after its timestamp takes a feed id
    session = reload(sign_in(UserFactory(), at=now))
    with transaction.atomic():
        assert presence._write_the_fast_path_in_one_statement(
            user=session.user,
            session=session,
            active=True,
            reported_status=ReportedStatus.ONLINE,
            keeps_report=False,
            at=now + timedelta(seconds=30),
        )
        assert show_synchronous_commit() == "off"
    assert show_synchronous_commit() == "on"
    assert stored(session.user) == (OnlineStatus.ONLINE, now + timedelta(seconds=30))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_heartbeat_that_changes_no_status_is_one_statement_and_one_that_does_falls_back(settings):
    settings.PRESENCE_WRITE_GRANULARITY = 25
    now = timezone.now()  # not NOW, taken at import: a write minutes after its timestamp takes a feed id
    session = sign_in(UserFactory(), at=now)
    loaded = reload(session)

    def heartbeat(*, at, reported_status):
        return presence.record_activity(
            user=loaded.user,
            session=loaded,
            active=reported_status == ReportedStatus.ONLINE,
            reported_status=reported_status,
            at=at,
        )

    # Was three statements (SET LOCAL and two UPDATEs) between BEGIN and COMMIT.
    assert len(statements_of(lambda: heartbeat(at=now + timedelta(seconds=30), reported_status="online"))) == 1
    assert stored(session.user) == (OnlineStatus.ONLINE, now + timedelta(seconds=30))
    changing = statements_of(lambda: heartbeat(at=now + timedelta(seconds=60), reported_status="away"))
    assert changing[0].startswith("WITH") and "SET LOCAL synchronous_commit TO OFF" in changing[1:]
    assert stored(session.user) == (OnlineStatus.AWAY, now + timedelta(seconds=60))
    assert len(statements_of(lambda: heartbeat(at=now + timedelta(seconds=90), reported_status="away"))) == 1


def activity_outcome(*, session, active, reported_status, at):
    """A request on `session`, its rows loaded fresh: the statements it ran, and all it left
    behind (return value, loaded objects, rows, history)."""
    loaded = reload(session)
    written = []
    statements = statements_of(
        lambda: written.append(
            presence.record_activity(
                user=loaded.user, session=loaded, active=active, reported_status=reported_status, at=at
            )
        )
    )
    left = (
        written,
        [getattr(loaded, name) for name in ("last_seen", "last_active", "ended_at", "reported_status")],
        [getattr(loaded.user, name) for name in ("last_seen", "last_active", "online_status", "presence_update_id")],
        PresenceSession.objects.filter(pk=session.pk).values().get(),
        User.objects.filter(pk=session.user_id).values().get(),
        list(PresenceInterval.objects.filter(user_id=session.user_id).values_list("status", "started_at", "ended_at")),
    )
    return statements, left


# The cases both one-statement writes (in the request, and deferred) are compared against the
# transactional path over: user rows on each side of the rule's limits, and every kind of request.
CASE_USER_ROWS = list(
    itertools.product(
        [OnlineStatus.ONLINE, OnlineStatus.AWAY, OnlineStatus.OFFLINE],  # stored
        [timedelta(seconds=10), timedelta(seconds=70)],  # since last seen: far from the timeout, or near
        [timedelta(seconds=10), timedelta(seconds=250)],  # since the last input: far from away, or near
        [None, OnlineStatus.AWAY],  # manual status
    )
)
CASE_REQUESTS = [(None, True), (None, False), (ReportedStatus.ONLINE, True), (ReportedStatus.AWAY, False)]


def case_session(*, at, stored_status, seen, input_age, manual, report, state="live"):
    """A user and one session of theirs as a case describes them; the session."""
    user = UserFactory(
        online_status=stored_status, last_seen=at - seen, last_active=at - input_age, manual_status=manual
    )
    return PresenceSession.objects.create(
        user=user,
        reported_status=report,
        created_at=at - timedelta(hours=1),
        last_seen=at - seen,
        last_active=at - input_age,
        ended_at=None if state == "live" else at - timedelta(seconds=5),
        end_reason={"live": "", "ended": SessionEndReason.IDLE, "revoked": SessionEndReason.LOGOUT}[state],
        revoked_at=at - timedelta(seconds=5) if state == "revoked" else None,
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_one_statement_write_does_what_the_transactional_path_does_or_nothing(settings):
    """Every case below ends as the transactional path alone ends it (run first inside a
    caller's transaction, then rolled back): the same return value, rows, history, feed id
    and loaded objects. The one statement writes in the cases that change no status and
    leaves the others to the transactional path."""
    settings.PRESENCE_WRITE_GRANULARITY = 0
    at = timezone.now().replace(microsecond=0)
    session_rows = itertools.product(["live", "ended", "revoked"], ReportedStatus.values)  # and its last report
    # Every user row with a live session reporting online, and every session row with a user
    # whom that session's activity leaves as is, or not: each side of the one statement's WHERE.
    far = timedelta(seconds=10)
    cases = [
        (*user_row, "live", ReportedStatus.ONLINE, *request) for user_row in CASE_USER_ROWS for request in CASE_REQUESTS
    ]
    cases += [
        (stored_status, far, far, None, *session_row, *request)
        for stored_status in (OnlineStatus.ONLINE, OnlineStatus.AWAY)
        for session_row in session_rows
        for request in CASE_REQUESTS
    ]
    paths = {"one statement": 0, "transactional": 0}
    with time_machine.travel(at, tick=False):  # no write here is slower than the margin
        for case in dict.fromkeys(cases):
            stored_status, seen, input_age, manual, state, report, reported_status, active = case
            session = case_session(
                at=at,
                stored_status=stored_status,
                seen=seen,
                input_age=input_age,
                manual=manual,
                report=report,
                state=state,
            )

            with transaction.atomic():
                _, expected = activity_outcome(session=session, active=active, reported_status=reported_status, at=at)
                transaction.set_rollback(True)
            statements, actual = activity_outcome(
                session=session, active=active, reported_status=reported_status, at=at
            )
            assert actual == expected, case
            paths["one statement" if len(statements) == 1 else "transactional"] += 1
    assert paths["one statement"] > 10 and paths["transactional"] > 10, paths


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_one_statement_write_locks_the_session_row_before_the_user_row(settings):
    """The order every presence writer takes its locks in: no deadlock with the others."""
    settings.PRESENCE_WRITE_GRANULARITY = 0
    session = sign_in(UserFactory(), at=timezone.now())
    loaded = reload(session)
    statements = []
    heartbeat = threading.Thread(
        target=_close_connection_after(
            lambda: statements.extend(
                statements_of(
                    lambda: presence.record_activity(
                        user=loaded.user, session=loaded, active=True, reported_status="online", at=timezone.now()
                    )
                )
            )
        )
    )

    with transaction.atomic():
        PresenceSession.objects.select_for_update().get(pk=session.pk)
        heartbeat.start()
        _wait_until_blocked_on_a_lock()
        # Waiting for the session row, it holds no lock on the user row.
        User.objects.select_for_update(nowait=True).get(pk=session.user_id)
    heartbeat.join(timeout=10)

    assert len(statements) == 1 and statements[0].startswith("WITH")
    assert reload(session).last_seen > session.last_seen


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_one_statement_write_slower_than_the_margin_takes_a_feed_id(settings):
    settings.PRESENCE_WRITE_GRANULARITY = 0
    session = sign_in(UserFactory(), at=NOW)
    loaded = reload(session)
    before = feed_id(session.user)
    # The request took its timestamp 61 s before this write commits (margin: 60 s).
    with time_machine.travel(NOW + timedelta(seconds=71), tick=False):
        statements = statements_of(
            lambda: presence.record_activity(
                user=loaded.user, session=loaded, active=True, at=NOW + timedelta(seconds=10)
            )
        )
    assert statements[0].startswith("WITH")
    assert feed_id(session.user) > before
    assert stored(session.user) == (OnlineStatus.ONLINE, NOW + timedelta(seconds=10))


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_sweep_writes_each_stale_user_once():
    stale = [UserFactory() for _ in range(3)]
    for user in stale:
        presence.start_session(user=user, at=NOW - timedelta(hours=1))
    updates = [
        sql
        for sql in statements_of(lambda: presence.mark_inactive_users_offline(now=NOW))
        if sql.startswith('UPDATE "users"')
    ]
    assert len(updates) == 1, updates
    assert all(User.objects.get(pk=user.pk).presence_update_id for user in stale)


@pytest.mark.postgres
@pytest.mark.django_db
def test_heartbeat_tables_leave_room_for_hot_updates():
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, reloptions FROM pg_class WHERE relname IN ('users', 'presence_sessions')")
        options = dict(cursor.fetchall())
    assert options == {"users": ["fillfactor=85"], "presence_sessions": ["fillfactor=85"]}


@pytest.mark.drill
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_sweep_that_finds_another_running_skips_and_the_running_one_does_the_work(caplog):
    """Two beats by mistake, or a sweep still running when the next is due: one at a time."""
    stale = UserFactory()
    sign_in(stale, at=timezone.now() - TIMEOUT - timedelta(minutes=1))
    feed_before = feed_id(stale)
    first, second = [], []
    first_sweep = threading.Thread(
        target=_close_connection_after(lambda: first.append(presence.mark_inactive_users_offline()))
    )
    second_sweep = threading.Thread(
        target=_close_connection_after(lambda: second.append(presence.mark_inactive_users_offline()))
    )

    with transaction.atomic():
        User.objects.select_for_update().get(pk=stale.pk)  # the first sweep stops here, mid-way
        first_sweep.start()
        _wait_until_blocked_on_a_lock()
        second_sweep.start()
        second_sweep.join(timeout=10)
        assert second == [0]  # it skipped at once instead of waiting or doing the work twice
        assert stored(stale)[0] == OnlineStatus.ONLINE
    first_sweep.join(timeout=10)

    assert first == [1]
    assert stored(stale)[0] == OnlineStatus.OFFLINE
    assert feed_id(stale) > feed_before
    sweep = PresenceSweep.objects.get()
    assert (sweep.sweeps_total, sweep.users_marked_offline_total) == (1, 1)
    assert sum("event=presence_sweep_skipped" in record.getMessage() for record in caplog.records) == 1
    # The next sweep finds nothing left to do: no double transition.
    assert presence.mark_inactive_users_offline() == 0
    assert PresenceSweep.objects.get().users_marked_offline_total == 1


RACE_ROUNDS = 1000


@pytest.mark.drill
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_race_heartbeat_against_the_sweep_at_the_timeout_boundary(settings):
    """docs/reliability.md, drill 6: RACE_ROUNDS rounds of one heartbeat and one sweep released
    together, the user exactly at the inactivity limit. Whatever the order, no user whose
    heartbeat committed is left offline, and no session it revived is left ended."""
    settings.PRESENCE_WRITE_GRANULARITY = 0
    session = sign_in(UserFactory(), at=timezone.now())
    start, done = threading.Barrier(3), threading.Barrier(3)
    outcomes = {"heartbeat": [], "sweep": []}
    errors = []

    def contender(name, work):
        try:
            for _ in range(RACE_ROUNDS):
                start.wait(timeout=30)
                try:
                    outcomes[name].append(work())
                except Exception as error:  # noqa: BLE001 (counted and reported below)
                    errors.append(repr(error))
                    outcomes[name].append(None)
                done.wait(timeout=30)
        finally:
            connections.close_all()

    def heartbeat():
        loaded = reload(session)  # as authentication loaded it, before the sweep ran
        return presence.record_activity(
            user=loaded.user, session=loaded, active=True, reported_status=ReportedStatus.ONLINE, at=timezone.now()
        )

    threads = [
        threading.Thread(target=contender, args=("heartbeat", heartbeat)),
        threading.Thread(target=contender, args=("sweep", presence.mark_inactive_users_offline)),
    ]
    for thread in threads:
        thread.start()
    left_offline, revived = 0, 0
    for round_ in range(RACE_ROUNDS):
        # Just past the limit: the sweep wants this user unless the heartbeat gets there first.
        stale = timezone.now() - TIMEOUT - timedelta(milliseconds=1)
        User.objects.filter(pk=session.user_id).update(online_status=OnlineStatus.ONLINE, last_seen=stale)
        PresenceSession.objects.filter(pk=session.pk).update(last_seen=stale, last_active=stale, ended_at=None)
        start.wait(timeout=30)
        done.wait(timeout=30)
        committed = outcomes["heartbeat"][round_]
        status = stored(session.user)[0]
        if committed and (status != OnlineStatus.ONLINE or not reload(session).is_live):
            left_offline += 1
        revived += bool(committed and outcomes["sweep"][round_])
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert left_offline == 0
    assert all(outcomes["heartbeat"])  # every heartbeat committed: nothing made it give up
    # Both orders happened: the sweep won some rounds (and the heartbeat revived the user),
    # lost others. A run where one side always wins would test nothing.
    assert 0 < revived < RACE_ROUNDS, revived
    print(f"race: {RACE_ROUNDS} rounds, sweep first in {revived}, heartbeat first in {RACE_ROUNDS - revived}")


# --- Deferred activity ------------------------------------------------------------------
def defer(session, *, at, active=True, reported_status=None):
    """A request that may answer before its write lands, its rows loaded fresh: what it
    returned, the statements it ran, and its loaded session (updated in memory)."""
    loaded = reload(session)
    returned = []
    statements = statements_of(
        lambda: returned.append(
            presence.record_activity(
                user=loaded.user,
                session=loaded,
                active=active,
                reported_status=reported_status,
                at=at,
                may_defer=True,
            )
        )
    )
    return returned[0], statements, loaded


def session_row(session):
    return PresenceSession.objects.filter(pk=session.pk).values("last_seen", "last_active", "ended_at").get()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_deferred_write_runs_no_query_in_the_request_and_lands_at_the_flush(deferred_activity):
    now = timezone.now()
    session = sign_in(UserFactory(), at=now - timedelta(seconds=30))
    before = feed_id(session.user)

    returned, statements, loaded = defer(session, at=now, reported_status=ReportedStatus.ONLINE)

    assert (returned, statements) == (True, [])
    assert (loaded.last_seen, loaded.user.last_seen, loaded.user.last_active) == (now, now, now)
    assert stored(session.user) == (OnlineStatus.ONLINE, now - timedelta(seconds=30))  # not yet written
    assert deferred_activity.pending() == 1

    assert presence.write_deferred_activity() == 1
    assert session_row(session)["last_seen"] == session_row(session)["last_active"] == now
    assert stored(session.user) == (OnlineStatus.ONLINE, now)
    assert feed_id(session.user) == before  # no status changed, none to announce
    assert deferred_activity.pending() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_second_of_many_clients_activity_is_one_statement(deferred_activity):
    now = timezone.now()
    sessions = [sign_in(UserFactory(), at=now - timedelta(seconds=30)) for _ in range(30)]
    for index, session in enumerate(sessions):
        defer(session, at=now + timedelta(milliseconds=index), reported_status=ReportedStatus.ONLINE)
    defer(sessions[0], at=now + timedelta(milliseconds=100), reported_status=ReportedStatus.ONLINE)  # merged

    statements = statements_of(presence.write_deferred_activity)

    assert len(statements) == 1 and statements[0].startswith("WITH")
    assert [session_row(session)["last_seen"] for session in sessions] == [
        now + timedelta(milliseconds=100 if index == 0 else index) for index in range(30)
    ]
    assert [stored(session.user)[1] for session in sessions] == [
        session_row(session)["last_seen"] for session in sessions
    ]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_write_that_changes_a_status_is_never_deferred(deferred_activity):
    now = timezone.now()
    session = sign_in(UserFactory(), at=now - timedelta(seconds=30))

    returned, statements, _ = defer(session, at=now, reported_status=ReportedStatus.AWAY)

    assert returned and statements  # written in the request: the user is away from now on
    assert stored(session.user) == (OnlineStatus.AWAY, now)
    assert deferred_activity.pending() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_deferred_activity_ends_as_the_transactional_path_ends_it(settings, deferred_activity):
    """Every request below, deferred or not, and then the flush of all the deferred ones in
    one statement, ends as the transactional path alone ends it (run first inside a caller's
    transaction, then rolled back): the same rows, history and feed ids."""
    settings.PRESENCE_WRITE_GRANULARITY = 0
    at = timezone.now().replace(microsecond=0)
    cases = [
        (*user_row, report, *request)
        for user_row in CASE_USER_ROWS
        for report in ReportedStatus.values
        for request in CASE_REQUESTS
    ]

    def outcome(session):
        user = User.objects.filter(pk=session.user_id).values().get()
        # Whether it took a feed id: the ids themselves differ, the expected ones being rolled back.
        user["presence_update_id"] = user["presence_update_id"] > initial_feed_ids[session.pk]
        return (
            PresenceSession.objects.filter(pk=session.pk).values().get(),
            user,
            list(
                PresenceInterval.objects.filter(user_id=session.user_id).values_list("status", "started_at", "ended_at")
            ),
        )

    expected, sessions, initial_feed_ids = {}, {}, {}
    with time_machine.travel(at, tick=False):  # no write here is slower than the margin
        for case in cases:
            stored_status, seen, input_age, manual, report, reported_status, active = case
            sessions[case] = case_session(
                at=at, stored_status=stored_status, seen=seen, input_age=input_age, manual=manual, report=report
            )
            initial_feed_ids[sessions[case].pk] = feed_id(sessions[case].user)
            with transaction.atomic():
                loaded = reload(sessions[case])
                presence.record_activity(
                    user=loaded.user, session=loaded, active=active, reported_status=reported_status, at=at
                )
                expected[case] = outcome(sessions[case])
                transaction.set_rollback(True)
        for case in cases:
            _, _, reported_status, active = case[3:]
            defer(sessions[case], at=at, active=active, reported_status=reported_status)
        deferred = deferred_activity.pending()
        presence.write_deferred_activity()

    assert {case: outcome(session) for case, session in sessions.items()} == expected
    assert 10 < deferred < len(cases) - 10  # both kinds of request are among the cases


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_deferred_write_finding_its_session_logged_out_leaves_it_so(deferred_activity):
    now = timezone.now()
    session = sign_in(UserFactory(), at=now - timedelta(seconds=30))
    defer(session, at=now, reported_status=ReportedStatus.ONLINE)
    presence.end_session(session=reload(session), reason=SessionEndReason.LOGOUT, at=now + timedelta(seconds=1))

    presence.write_deferred_activity()

    ended = PresenceSession.objects.get(pk=session.pk)
    assert ended.revoked_at == ended.ended_at == now + timedelta(seconds=1)
    assert stored(session.user) == (OnlineStatus.OFFLINE, now + timedelta(seconds=1))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_deferred_write_whose_user_would_now_show_otherwise_takes_the_transactional_path(deferred_activity):
    """Flushed 70 s after its request, past the margin, a row last seen 100 s ago is no longer
    one its write leaves as it shows: written on its own, with a feed id for pollers."""
    session = sign_in(UserFactory(), at=NOW)
    with time_machine.travel(NOW + timedelta(seconds=30), tick=False):
        defer(session, at=NOW + timedelta(seconds=30), reported_status=ReportedStatus.ONLINE)
    before = feed_id(session.user)

    with time_machine.travel(NOW + timedelta(seconds=100), tick=False):
        statements = statements_of(presence.write_deferred_activity)

    assert len(statements) > 1  # the one statement, then the transactional path
    assert stored(session.user) == (OnlineStatus.ONLINE, NOW + timedelta(seconds=30))
    assert feed_id(session.user) > before


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_deferred_write_landing_past_the_margin_takes_a_feed_id(deferred_activity):
    user = UserFactory()
    phone, laptop = sign_in(user, at=NOW), sign_in(user, at=NOW)
    with time_machine.travel(NOW + timedelta(seconds=30), tick=False):
        defer(phone, at=NOW + timedelta(seconds=30), reported_status=ReportedStatus.ONLINE)
    with time_machine.travel(NOW + timedelta(seconds=65), tick=False):
        touch(laptop, at=NOW + timedelta(seconds=65))  # the user's row stays fresh for the flush
    before = feed_id(user)

    with time_machine.travel(NOW + timedelta(seconds=95), tick=False):
        statements = statements_of(presence.write_deferred_activity)

    assert statements[0].startswith("WITH") and session_row(phone)["last_seen"] == NOW + timedelta(seconds=30)
    assert feed_id(user) > before  # committed 65 s after its timestamp: a poll may have missed it


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_flush_locks_session_rows_before_user_rows(deferred_activity):
    """The order every presence writer takes its locks in: no deadlock with the others."""
    now = timezone.now()
    session = sign_in(UserFactory(), at=now - timedelta(seconds=30))
    defer(session, at=now, reported_status=ReportedStatus.ONLINE)
    flush = threading.Thread(target=_close_connection_after(presence.write_deferred_activity))

    with transaction.atomic():
        PresenceSession.objects.select_for_update().get(pk=session.pk)
        flush.start()
        _wait_until_blocked_on_a_lock()
        # Waiting for the session row, it holds no lock on the user row.
        User.objects.select_for_update(nowait=True).get(pk=session.user_id)
    flush.join(timeout=10)

    assert session_row(session)["last_seen"] == now


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_process_writes_deferred_activity_by_itself_within_the_interval(settings, deferred_activity):
    settings.PRESENCE_WRITE_BATCH_INTERVAL = 0.2
    now = timezone.now()
    session = sign_in(UserFactory(), at=now - timedelta(seconds=30))

    defer(session, at=now, reported_status=ReportedStatus.ONLINE)

    deadline = time.monotonic() + 10  # 50 intervals: a liveness bound, not a speed measurement
    while session_row(session)["last_seen"] != now and time.monotonic() < deadline:
        time.sleep(0.05)
    assert session_row(session)["last_seen"] == now
    assert deferred_activity.pending() == 0


@pytest.mark.django_db
def test_nothing_is_deferred_on_sqlite_or_inside_a_transaction_or_with_the_interval_at_zero(
    settings, deferred_activity
):
    now = timezone.now()
    session = sign_in(UserFactory(), at=now - timedelta(seconds=30))
    if connection.vendor == "postgresql":
        with transaction.atomic():
            defer(session, at=now, reported_status=ReportedStatus.ONLINE)
        settings.PRESENCE_WRITE_BATCH_INTERVAL = 0
        defer(session, at=now + timedelta(seconds=30), reported_status=ReportedStatus.ONLINE)
        assert session_row(session)["last_seen"] == now + timedelta(seconds=30)
    else:
        defer(session, at=now, reported_status=ReportedStatus.ONLINE)
        assert session_row(session)["last_seen"] == now
    assert deferred_activity.pending() == 0
