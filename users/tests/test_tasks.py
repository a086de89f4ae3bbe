import os
import signal
import sqlite3
import subprocess
import sys
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from offchat_backend.celery import app
from offchat_backend.tests.support import (
    REPO,
    VENV_BIN,
    ProjectProcess,
    clean_env,
    session_database_url,
    waiting_on_a_lock,
)
from users import tasks
from users.models import OnlineStatus, PresenceSession, PresenceSweep, SessionEndReason, User
from users.ops.health import system_health
from users.services import auth, presence
from users.tests.factories import UserFactory

CELERY = VENV_BIN / "celery"
FAST_SWEEP = {
    "PRESENCE_SWEEP_INTERVAL": "1",
    "PRESENCE_INACTIVITY_TIMEOUT": "2",
    "PRESENCE_HEARTBEAT_INTERVAL": "1",
    "PRESENCE_WRITE_GRANULARITY": "0",
}


@pytest.mark.django_db
def test_task_sweeps_records_the_run_and_logs_one_structured_line(caplog):
    stale = timezone.now() - timedelta(seconds=settings.PRESENCE_INACTIVITY_TIMEOUT + 1)
    UserFactory.create_batch(2, online_status=OnlineStatus.ONLINE, last_seen=stale)
    UserFactory(online_status=OnlineStatus.ONLINE, last_seen=timezone.now())

    with caplog.at_level("INFO", logger="users"):
        changed = tasks.check_and_mark_offline_users()
        tasks.check_and_mark_offline_users()

    assert changed == 2
    assert User.objects.filter(online_status=OnlineStatus.ONLINE).count() == 1
    sweep_lines = [record for record in caplog.records if getattr(record, "event", None) == "presence_sweep"]
    assert len(sweep_lines) == 2  # one line per sweep
    assert "event=presence_sweep users_marked_offline=2 sessions_ended=0 duration_ms=" in sweep_lines[0].message
    assert sweep_lines[1].users_marked_offline == 0
    # The last run and the running totals, for health and metrics.
    sweep = PresenceSweep.objects.get()
    assert (sweep.users_marked_offline, sweep.sweeps_total, sweep.users_marked_offline_total) == (0, 2, 2)
    assert sweep.finished_at is not None and sweep.duration_seconds > 0


def test_beat_runs_the_sweep_every_interval_and_drops_a_backlog():
    entries = [
        entry for entry in app.conf.beat_schedule.values() if entry["task"] == tasks.check_and_mark_offline_users.name
    ]
    assert tasks.check_and_mark_offline_users.name == "users.tasks.check_and_mark_offline_users"
    assert len(entries) == 1
    assert entries[0]["schedule"] == settings.PRESENCE_SWEEP_INTERVAL
    assert 0 < entries[0]["options"]["expires"] <= settings.PRESENCE_SWEEP_INTERVAL


@pytest.mark.django_db
def test_flush_expired_tokens_drops_only_expired_refresh_tokens():
    user = UserFactory()
    with time_machine.travel(timezone.now() - settings.SIMPLE_JWT["REFRESH_TOKEN_LIFETIME"] - timedelta(hours=1)):
        auth.log_in(user=user)
    current = auth.log_in(user=user)

    tasks.flush_expired_tokens()

    assert list(OutstandingToken.objects.values_list("jti", flat=True)) == [RefreshToken(current.refresh)["jti"]]


def test_beat_flushes_expired_tokens_daily():
    entry = app.conf.beat_schedule["flush-expired-tokens"]
    assert entry["task"] == tasks.flush_expired_tokens.name
    assert entry["schedule"] == 24 * 60 * 60


def worker_env(**config):
    return clean_env(**{**FAST_SWEEP, **config})


@pytest.fixture
def start_worker(tmp_path):
    workers = []

    def start(env):
        """`celery -A offchat_backend worker --beat -l info`, exactly as ops run it."""
        command = [str(CELERY), "-A", "offchat_backend", "worker", "--beat", "-l", "info"]
        worker = ProjectProcess(command, env=env, log_path=tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_real_worker_with_beat_marks_a_stale_user_offline_on_postgres_and_redis(start_worker, tmp_path, settings):
    settings.PRESENCE_WRITE_GRANULARITY = 0
    stale = UserFactory()
    presence.start_session(user=stale, at=timezone.now() - timedelta(hours=1))
    active = UserFactory()
    active_session = presence.start_session(user=active)

    worker = start_worker(
        worker_env(
            DJANGO_SETTINGS_MODULE="offchat_backend.settings.development",
            DATABASE_URL=session_database_url(),
            REDIS_URL=settings.REDIS_URL,
            LOCAL_STATE_DIR=str(tmp_path / "state"),
        )
    )
    worker.wait_for(
        lambda: User.objects.get(pk=stale.pk).online_status == OnlineStatus.OFFLINE,
        # The active user keeps heartbeating, so sweeps that run meanwhile must leave them online.
        while_waiting=lambda: presence.record_activity(user=active, session=active_session, active=False),
    )
    worker.wait_for(lambda: "users_marked_offline=1" in worker.output())

    assert "redis://" in worker.output()
    assert User.objects.get(pk=active.pk).online_status == OnlineStatus.ONLINE
    # What /api/health/ reads: the worker's sweeps are recorded where the web process sees them.
    sweeper = system_health().checks["sweeper"]
    assert sweeper.ok, sweeper.reason
    assert PresenceSweep.objects.get().users_marked_offline_total == 1
    # The stale user's session was ended as idle, not revoked: their device may come back.
    ended = PresenceSession.objects.get(user=stale)
    assert (ended.end_reason, ended.revoked_at) == (SessionEndReason.IDLE, None)


def test_real_worker_with_beat_runs_on_the_embedded_defaults_with_no_environment(start_worker, tmp_path):
    """A newcomer's `celery -A offchat_backend worker --beat -l info`: SQLite and a folder broker.

    The sweep interval is an hour here: the sweep that makes the user offline is the one beat
    sends as it starts."""
    env = worker_env(LOCAL_STATE_DIR=str(tmp_path), PRESENCE_SWEEP_INTERVAL="3600", PRESENCE_INACTIVITY_TIMEOUT="7200")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--no-input"], cwd=REPO, env=env, check=True, capture_output=True)
    create_stale_user = (
        "from datetime import datetime, timezone; from users.models import User; "
        "User.objects.create(username='stale', online_status='online', "
        "last_seen=datetime(2020, 1, 1, tzinfo=timezone.utc))"
    )
    subprocess.run([*manage, "shell", "-c", create_stale_user], cwd=REPO, env=env, check=True, capture_output=True)

    def stale_status():
        with sqlite3.connect(tmp_path / "db.sqlite3", timeout=20) as db:
            return db.execute("SELECT online_status FROM users WHERE username = 'stale'").fetchone()[0]

    worker = start_worker(env)
    worker.wait_for(lambda: stale_status() == "offline")

    assert "filesystem://" in worker.output()


def _postgres_worker_env(settings, tmp_path, name, **config):
    return worker_env(
        DJANGO_SETTINGS_MODULE="offchat_backend.settings.development",
        DATABASE_URL=session_database_url(),
        REDIS_URL=settings.REDIS_URL,
        LOCAL_STATE_DIR=str(tmp_path / name),
        **config,
    )


def _stale_users(count):
    users = UserFactory.create_batch(count)
    for user in users:
        presence.start_session(user=user, at=timezone.now() - timedelta(hours=1))
    return users


@pytest.mark.drill
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_drill_a_worker_killed_mid_sweep_leaves_nothing_half_applied(start_worker, tmp_path, settings):
    """docs/reliability.md, drill 4. The sweep has ended the first user's session and waits
    for the second user's row when its worker is killed (SIGKILL, no cleanup). The
    transaction dies with the connection; the next worker's sweep does the whole job."""
    first, second = _stale_users(2)
    env = _postgres_worker_env(settings, tmp_path, "state")

    with transaction.atomic():
        User.objects.select_for_update().get(pk=second.pk)
        killed = start_worker(env)
        killed.wait_for(waiting_on_a_lock)  # beat's first sweep is mid-way, inside its transaction
        os.killpg(killed.process.pid, signal.SIGKILL)
        killed.process.wait(timeout=10)
    # The orphaned PostgreSQL backend gets the lock now, fails to answer its dead client,
    # and rolls back: not one of the sweep's writes is visible.
    for user in (first, second):
        assert User.objects.get(pk=user.pk).online_status == OnlineStatus.ONLINE
        assert PresenceSession.objects.get(user=user).ended_at is None
    assert PresenceSweep.objects.get().sweeps_total == 0

    start_worker(env).wait_for(
        lambda: set(User.objects.filter(pk__in=[first.pk, second.pk]).values_list("online_status", flat=True))
        == {OnlineStatus.OFFLINE}
    )
    assert set(PresenceSession.objects.values_list("end_reason", flat=True)) == {SessionEndReason.IDLE}
    assert PresenceSweep.objects.get().users_marked_offline_total == 2
    print("\ndrill 4: worker killed mid-sweep: nothing applied; the next worker's sweep ended both sessions")


@pytest.mark.drill
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_drill_two_beats_by_mistake_sweep_one_at_a_time(start_worker, tmp_path, settings):
    """docs/reliability.md, drill 3: two `worker --beat` processes, each sending a sweep every
    second. While one sweep is held mid-way past several intervals, the others skip; every
    stale user goes offline once, and no process logs an error."""
    stale = _stale_users(3)
    workers = []
    with transaction.atomic():
        User.objects.select_for_update().get(pk=stale[-1].pk)
        for name in ("one", "two"):
            workers.append(start_worker(_postgres_worker_env(settings, tmp_path, name)))
        workers[0].wait_for(waiting_on_a_lock)
        workers[0].wait_for(lambda: sum(w.output().count("event=presence_sweep_skipped") for w in workers) >= 3)
        assert all(User.objects.get(pk=user.pk).online_status == OnlineStatus.ONLINE for user in stale)

    workers[0].wait_for(
        lambda: set(User.objects.filter(pk__in=[user.pk for user in stale]).values_list("online_status", flat=True))
        == {OnlineStatus.OFFLINE}
    )
    # More sweeps run after; none finds anything to do twice.
    completed = PresenceSweep.objects.get().sweeps_total
    workers[0].wait_for(lambda: PresenceSweep.objects.get().sweeps_total >= completed + 2)
    assert PresenceSweep.objects.get().users_marked_offline_total == 3
    logs = "".join(worker.output() for worker in workers)
    marked = [
        int(line.split("users_marked_offline=")[1].split()[0])
        for line in logs.splitlines()
        if "event=presence_sweep " in line
    ]
    assert sum(marked) == 3
    assert " ERROR " not in logs and "Traceback" not in logs
    skipped = logs.count("event=presence_sweep_skipped")
    print(
        f"\ndrill 3: two beats: {completed + 2}+ sweeps completed, {skipped} skipped while one held the lock, "
        "3 users offline once"
    )


def test_every_periodic_task_has_a_soft_and_a_hard_time_limit():
    for entry in app.conf.beat_schedule.values():
        task = app.tasks[entry["task"]]
        assert 0 < task.soft_time_limit < task.time_limit, entry["task"]
    sweep = app.tasks["users.tasks.check_and_mark_offline_users"]
    assert sweep.soft_time_limit == settings.PRESENCE_SWEEP_TIME_LIMIT


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_a_sweep_past_its_time_limit_is_stopped_whole_and_the_next_one_does_the_work(start_worker, tmp_path, settings):
    """A real worker with a 2 s limit, its sweeps held on a row lock for longer: each is
    stopped with nothing applied and a warning, no crash; once the lock goes, a sweep does it all."""
    stale = _stale_users(2)
    with transaction.atomic():
        User.objects.select_for_update().get(pk=stale[-1].pk)
        worker = start_worker(_postgres_worker_env(settings, tmp_path, "limited", PRESENCE_SWEEP_TIME_LIMIT="2"))
        worker.wait_for(lambda: "event=presence_sweep_timed_out" in worker.output(), timeout=30)
        assert {User.objects.get(pk=user.pk).online_status for user in stale} == {OnlineStatus.ONLINE}
        assert PresenceSession.objects.filter(user__in=stale, ended_at__isnull=True).count() == 2

    worker.wait_for(
        lambda: set(User.objects.filter(pk__in=[user.pk for user in stale]).values_list("online_status", flat=True))
        == {OnlineStatus.OFFLINE}
    )
    logs = worker.output()
    assert "limit_s=2" in logs
    assert " ERROR " not in logs and "Traceback" not in logs
