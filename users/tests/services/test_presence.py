import threading
import time
from datetime import timedelta

import pytest
import time_machine
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from users.models import OnlineStatus, User
from users.selectors import online_users_for_admin
from users.services import presence
from users.tests.factories import UserFactory

NOW = timezone.now().replace(microsecond=0)
TIMEOUT = timedelta(seconds=120)


def stored(user):
    user = User.objects.get(pk=user.pk)
    return user.online_status, user.last_seen


@pytest.mark.django_db
class TestRecordActivity:
    def test_brings_an_offline_user_online_and_stamps_last_seen(self):
        user = UserFactory(last_seen=NOW - timedelta(hours=3))
        assert presence.record_activity(user=user, at=NOW)
        assert stored(user) == (OnlineStatus.ONLINE, NOW)
        assert (user.online_status, user.last_seen) == (OnlineStatus.ONLINE, NOW)

    def test_first_activity_of_a_never_seen_user_is_written(self):
        user = UserFactory()
        assert presence.record_activity(user=user, at=NOW)
        assert stored(user) == (OnlineStatus.ONLINE, NOW)

    def test_activity_within_the_write_granularity_is_coalesced(self, settings):
        settings.PRESENCE_WRITE_GRANULARITY = 25
        user = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=NOW)
        with CaptureQueriesContext(connection) as queries:
            written = presence.record_activity(user=user, at=NOW + timedelta(seconds=24))
        assert not written
        assert len(queries) == 1  # the conditional UPDATE itself; it matched no row
        assert stored(user) == (OnlineStatus.ONLINE, NOW)

    def test_activity_after_the_write_granularity_moves_last_seen(self, settings):
        settings.PRESENCE_WRITE_GRANULARITY = 25
        user = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=NOW)
        assert presence.record_activity(user=user, at=NOW + timedelta(seconds=25))
        assert stored(user) == (OnlineStatus.ONLINE, NOW + timedelta(seconds=25))

    def test_an_away_user_who_acts_is_online_at_once_despite_the_granularity(self, settings):
        settings.PRESENCE_WRITE_GRANULARITY = 25
        user = UserFactory(online_status=OnlineStatus.AWAY, last_seen=NOW)
        assert presence.record_activity(user=user, at=NOW + timedelta(seconds=1))
        assert stored(user) == (OnlineStatus.ONLINE, NOW + timedelta(seconds=1))

    def test_a_request_older_than_a_logout_does_not_bring_the_user_back(self):
        user = UserFactory()
        presence.mark_offline(user=user, at=NOW)
        assert not presence.record_activity(user=user, at=NOW - timedelta(seconds=1))
        assert stored(user) == (OnlineStatus.OFFLINE, NOW)


@pytest.mark.django_db
class TestExplicitWrites:
    def test_mark_online_and_offline_write_status_and_last_seen(self):
        user = UserFactory()
        presence.mark_online(user=user, at=NOW)
        assert stored(user) == (OnlineStatus.ONLINE, NOW)
        presence.mark_offline(user=user, at=NOW + timedelta(seconds=5))
        assert stored(user) == (OnlineStatus.OFFLINE, NOW + timedelta(seconds=5))

    def test_set_status_leaves_last_seen_alone_and_skips_no_op_writes(self):
        user = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=NOW)
        assert presence.set_status(user=user, status=OnlineStatus.AWAY)
        assert stored(user) == (OnlineStatus.AWAY, NOW)
        assert not presence.set_status(user=user, status=OnlineStatus.AWAY)


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
        user = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=NOW)
        with time_machine.travel(NOW + idle, tick=False):
            presence.mark_inactive_users_offline()
        assert stored(user) == (expected, NOW)

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

    def test_is_one_update_statement_that_rechecks_last_seen(self):
        UserFactory.create_batch(3, online_status=OnlineStatus.ONLINE, last_seen=NOW - timedelta(hours=1))
        with CaptureQueriesContext(connection) as queries:
            assert presence.mark_inactive_users_offline(now=NOW) == 3
        assert len(queries) == 1
        sql = queries[0]["sql"]
        assert sql.startswith('UPDATE "users" SET')
        assert '"last_seen" <' in sql.split("WHERE", 1)[1]


def _close_connection_after(work):
    def run(*args):
        try:
            work(*args)
        finally:
            connections.close_all()

    return run


def _wait_until_blocked_on_a_lock(timeout=10.0):
    deadline = time.monotonic() + timeout
    with connections["default"].cursor() as cursor:
        while time.monotonic() < deadline:
            # Activity statistics are a snapshot per transaction, and the caller holds one open.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.02)
    raise AssertionError("the sweep never waited for the heartbeat's row lock")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
class TestSweepRacingHeartbeatOnPostgres:
    def test_heartbeat_committing_while_the_sweep_waits_keeps_the_user_online(self):
        """The sweep's WHERE is re-evaluated on the row the heartbeat committed."""
        user = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=NOW - TIMEOUT - timedelta(minutes=1))
        swept = []
        sweeper = threading.Thread(
            target=_close_connection_after(lambda: swept.append(presence.mark_inactive_users_offline()))
        )

        with transaction.atomic():
            presence.record_activity(user=user)  # holds the row lock until commit
            sweeper.start()
            _wait_until_blocked_on_a_lock()
        sweeper.join(timeout=10)

        assert swept == [0]
        assert stored(user)[0] == OnlineStatus.ONLINE

    def test_heartbeat_waiting_for_the_sweep_ends_online(self):
        user = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=NOW - TIMEOUT - timedelta(minutes=1))
        heartbeat = threading.Thread(target=_close_connection_after(lambda: presence.record_activity(user=user)))

        with transaction.atomic():
            assert presence.mark_inactive_users_offline() == 1
            heartbeat.start()
            _wait_until_blocked_on_a_lock()
        heartbeat.join(timeout=10)

        assert stored(user)[0] == OnlineStatus.ONLINE

    def test_unordered_rounds_never_leave_a_heartbeating_user_offline(self):
        users = UserFactory.create_batch(20, online_status=OnlineStatus.ONLINE)
        for _ in range(10):
            User.objects.update(last_seen=timezone.now() - TIMEOUT - timedelta(seconds=1))
            workers = [
                threading.Thread(target=_close_connection_after(lambda u=u: presence.record_activity(user=u)))
                for u in users
            ] + [threading.Thread(target=_close_connection_after(lambda: presence.mark_inactive_users_offline()))]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(timeout=10)
            assert set(User.objects.values_list("online_status", flat=True)) == {OnlineStatus.ONLINE}


def planned_without_seqscan(sql, params=()):
    """The plan PostgreSQL picks when a sequential scan is off: on a tiny test table this asks
    whether an index is usable at all, not whether it is the cheapest path today."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.postgres
@pytest.mark.django_db
def test_sweep_update_can_read_only_the_present_part_of_the_table():
    with transaction.atomic():
        with CaptureQueriesContext(connection) as queries:
            presence.mark_inactive_users_offline(now=NOW)
        transaction.set_rollback(True)
    plan = planned_without_seqscan(queries[0]["sql"])
    assert "users_present_status_idx" in plan, plan


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_admin_online_filter_can_use_the_same_index():
    plan = planned_without_seqscan(*online_users_for_admin().query.sql_with_params())
    assert "users_present_status_idx" in plan, plan
