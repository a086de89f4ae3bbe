"""Failure drills with real processes (docs/reliability.md): PostgreSQL restarted under
heartbeat load, and two web processes with two workers sharing one database and Redis.

Each drill prints its figures (run with -s to see them: `./scripts/test -m drill -s`)."""

import json
import secrets
import subprocess
import sys
import threading
import time

import psycopg2
import pytest
from django.conf import settings

from conftest import skip_for_missing_service
from offchat_backend.tests.support import (
    PROXIED_HOST,
    REPO,
    VENV_BIN,
    PrivatePostgres,
    ProjectProcess,
    api_request,
    clean_env,
    free_port,
    postgres_bin_dir,
    session_database_url,
)
from users.models import OnlineStatus, User
from users.services import auth
from users.tests.factories import StaffFactory, UserFactory

pytestmark = [pytest.mark.drill, pytest.mark.redis]

UNTHROTTLED = {
    "THROTTLE_RATE_HEARTBEAT": "1000000/min",
    "THROTTLE_RATE_USER": "1000000/min",
    "THROTTLE_RATE_LOGIN": "1000000/min",
    "THROTTLE_RATE_ANON": "1000000/min",
}


def production_env(tmp_path, database_url, *, secret_key, **config):
    return clean_env(
        DJANGO_SETTINGS_MODULE="offchat_backend.settings.production",
        SECRET_KEY=secret_key,
        ALLOWED_HOSTS=PROXIED_HOST,
        DATABASE_URL=database_url,
        REDIS_URL=settings.REDIS_URL,
        LOCAL_STATE_DIR=str(tmp_path),
        STATIC_ROOT=str(tmp_path),
        LOG_FORMAT="plain",
        **UNTHROTTLED,
        **config,
    )


def start_gunicorn(env, log_path, workers=2):
    port = free_port()
    server = ProjectProcess(
        [
            str(VENV_BIN / "gunicorn"),
            "offchat_backend.wsgi:application",
            f"--bind=127.0.0.1:{port}",
            f"--workers={workers}",
        ],
        env=env,
        log_path=log_path,
    )
    try:
        # Probed with the expected Host, so that the logs hold no DisallowedHost noise.
        server.wait_for(lambda: api_request(port, "/metrics", timeout=1)[0] == 200, timeout=30)
    except BaseException:
        server.stop()
        raise
    return port, server


class HeartbeatLoad:
    """One thread per user, a heartbeat every `interval` seconds, every answer kept with the
    time it came back."""

    def __init__(self, ports, tokens, interval):
        self.ports, self.tokens, self.interval = ports, tokens, interval
        self.answers = []  # (monotonic time, user index, status, body)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(index,)) for index in range(len(tokens))]

    def _run(self, index):
        while not self._stop.is_set():
            port = self.ports[len(self.answers) % len(self.ports)]
            status, body = api_request(port, "/api/users/heartbeat/", token=self.tokens[index], body={}, timeout=5)
            with self._lock:
                self.answers.append((time.monotonic(), index, status, body))
            self._stop.wait(self.interval)

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


@pytest.fixture
def private_postgres():
    if postgres_bin_dir() is None:
        skip_for_missing_service("needs PostgreSQL's server binaries (apt-get install postgresql)")
    server = PrivatePostgres()
    server.start()
    yield server
    server.stop()


SIGN_IN_USERS = """
import json, sys
from users.models import User
from users.services import auth
tokens = []
for number in range(int(sys.argv[1])):
    user = User.objects.create_user(username=f"drill{number}", password=None)
    tokens.append(auth.log_in(user=user).access)
print(json.dumps(tokens))
"""


def test_drill_postgres_restarted_under_heartbeat_load(private_postgres, tmp_path):
    """Drill 2: gunicorn (production settings, 2 workers) on a PostgreSQL of the test's own,
    20 users heartbeating every 0.2 s, the server restarted (fast mode) mid-load. While it is
    down, requests get 503 with Retry-After, never a 500; then they succeed again without
    restarting anything (CONN_HEALTH_CHECKS replaces the dead connections); every user ends
    online with the last heartbeat that was acknowledged."""
    admin = psycopg2.connect(private_postgres.url())
    admin.autocommit = True
    admin.cursor().execute("CREATE DATABASE offchat")
    admin.close()
    env = production_env(tmp_path, private_postgres.url("offchat"), secret_key=secrets.token_urlsafe(50))
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--no-input"], cwd=REPO, env=env, check=True, capture_output=True)
    signed_in = subprocess.run(
        [*manage, "shell", "-c", f"import sys; sys.argv = ['', '20']\n{SIGN_IN_USERS}"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    tokens = json.loads(signed_in.stdout.strip().splitlines()[-1])
    port, server = start_gunicorn(env, tmp_path / "gunicorn.log")

    try:
        with HeartbeatLoad([port], tokens, interval=0.2) as load:
            time.sleep(3)  # steady load before the restart
            restart_started = time.monotonic()
            private_postgres.restart()
            restart_took = time.monotonic() - restart_started
            time.sleep(8)  # and after it
    finally:
        server.stop()

    answers = load.answers
    failures = [(at, status) for at, _, status, _ in answers if status != 200]
    statuses = {status for _, status in failures}
    assert statuses <= {503}, f"failures other than 503: {statuses}\n{server.output()[-3000:]}"
    assert all(body.get("detail") for _, _, status, body in answers if status == 503)
    window = (failures[-1][0] - failures[0][0]) if failures else 0.0
    last_failure = failures[-1][0] if failures else restart_started
    after = [status for at, _, status, _ in answers if at > last_failure]
    assert len(after) > 100 and set(after) == {200}, "requests did not recover on their own"

    # Every acknowledged heartbeat is in the database; every user is online with a live session.
    acknowledged = {}
    for _, index, status, body in answers:
        if status == 200:
            acknowledged[f"drill{index}"] = max(acknowledged.get(f"drill{index}", ""), body["last_seen"])
    check = psycopg2.connect(private_postgres.url("offchat"))
    with check.cursor() as cursor:
        cursor.execute(
            "SELECT u.username, u.online_status, u.last_seen, count(s.id) FILTER (WHERE s.ended_at IS NULL) "
            "FROM users u LEFT JOIN presence_sessions s ON s.user_id = u.id GROUP BY u.id"
        )
        rows = cursor.fetchall()
    check.close()
    assert len(rows) == 20
    for username, status, last_seen, live_sessions in rows:
        assert (status, live_sessions) == ("online", 1), username
        assert last_seen.isoformat().replace("+00:00", "Z") >= acknowledged[username], username

    print(
        f"\ndrill 2: {len(answers)} heartbeats, restart took {restart_took:.2f} s, "
        f"{len(failures)} answered 503 over {window:.2f} s, {len(after)} after it all 200; "
        f"20 users online, no acknowledged heartbeat lost"
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_drill_two_web_processes_and_two_workers_agree(tmp_path):
    """Drill 5: two gunicorn processes and two Celery workers (one with beat) on one database
    and one Redis; load spread over both web processes. Both answer the same presence, and
    the sweeps (run by either worker) take the users who stopped."""
    env = production_env(
        tmp_path,
        session_database_url(),
        secret_key=settings.SECRET_KEY,  # the tokens are made here, in the test's process
        # Short, so the drill is quick; long enough that a heartbeat every 0.5 s on a busy
        # 2-core machine (eight server processes) never misses it.
        PRESENCE_INACTIVITY_TIMEOUT="6",
        PRESENCE_SWEEP_INTERVAL="1",
        PRESENCE_HEARTBEAT_INTERVAL="1",
        PRESENCE_WRITE_GRANULARITY="0",
    )
    staff = StaffFactory()
    staff_token = auth.log_in(user=staff).access
    users = UserFactory.create_batch(12)
    issued = [auth.log_in(user=user) for user in users]
    tokens = [tokens.access for tokens in issued]
    keep, vanish, away, leave = users[:6], users[6:9], users[9:11], users[11:]

    processes = []
    try:
        web = []
        for name in ("a", "b"):
            port, server = start_gunicorn(env, tmp_path / f"web-{name}.log")
            web.append(port)
            processes.append(server)
        celery = [str(VENV_BIN / "celery"), "-A", "offchat_backend", "worker", "-l", "info"]
        processes.append(ProjectProcess([*celery, "--beat"], env=env, log_path=tmp_path / "worker-1.log"))
        processes.append(ProjectProcess(celery, env=env, log_path=tmp_path / "worker-2.log"))
        for worker in processes[2:]:
            worker.wait_for(lambda worker=worker: " ready." in worker.output())

        # Every user shows up through both web processes in turn.
        for index, token in enumerate(tokens):
            assert api_request(web[index % 2], "/api/users/heartbeat/", token=token, body={})[0] == 200
        for index, user in enumerate(away):
            token = tokens[users.index(user)]
            assert api_request(web[index % 2], "/api/users/heartbeat/", token=token, body={"status": "away"})[0] == 200
        leaving = issued[users.index(leave[0])]
        assert (
            api_request(web[1], "/api/users/logout/", token=leaving.access, body={"refresh": leaving.refresh})[0] == 200
        )

        kept_tokens = [tokens[users.index(user)] for user in keep]
        away_tokens = [tokens[users.index(user)] for user in away]
        # The admin heartbeats too: reading the lists is activity, and an admin who went offline
        # between the two reads would be shown differently by each, for a reason of their own.
        with HeartbeatLoad(web, [*kept_tokens, staff_token], interval=0.5):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for token in away_tokens:
                    api_request(web[0], "/api/users/heartbeat/", token=token, body={"status": "away"})
                if set(User.objects.filter(pk__in=[u.pk for u in vanish]).values_list("online_status", flat=True)) == {
                    OnlineStatus.OFFLINE
                }:
                    break
                time.sleep(0.5)

            views = [
                api_request(port, "/api/users/admin/users/?page_size=200&ordering=id", token=staff_token)[1]
                for port in web
            ]
            summaries = [api_request(port, "/api/users/admin/users/summary/", token=staff_token)[1] for port in web]
    finally:
        for process in processes:
            process.stop()

    rows = [{row["username"]: row["online_status"] for row in view["results"]} for view in views]
    assert rows[0] == rows[1], (rows, "".join(process.output()[-2000:] for process in processes[2:]))
    assert summaries[0] == summaries[1]
    expected = {
        **{user.username: "online" for user in keep},
        **{user.username: "offline" for user in vanish},
        **{user.username: "away" for user in away},
        **{user.username: "offline" for user in leave},
    }
    assert {name: rows[0][name] for name in expected} == expected
    logs = [process.output() for process in processes]
    errors = [line for log in logs for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
    assert errors == []
    sweeps = [log.count("event=presence_sweep ") for log in logs[2:]]
    print(f"\ndrill 5: both web processes answer {summaries[0]}; sweeps run by worker 1 / worker 2: {sweeps}")
