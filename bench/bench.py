"""OffChat presence benchmark: real gunicorn, PostgreSQL and Redis, load from other processes
(wrk with bench/wrk.lua, bench/load.py). Writes REPORT.md and results.json.

    bench/run                     # the full run (200k and 1M users, ~30 min): bench/REPORT.md
    bench/run --quick --output D  # a tiny scale in a few minutes, so that CI keeps the benchmark working
    bench/run --only sweep,admin_list,feed   # rows 4-6 alone (~10 min), printed as JSON

Every figure is reported next to a baseline measured in the same run, as a ratio: the
machine is shared and noisy, so absolute numbers move from run to run; ratios move less.
Needs PostgreSQL (BENCH_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/offchat_bench;
the database is dropped and recreated), Redis (BENCH_REDIS_URL, default db 14) and wrk.
"""

import argparse
import base64
import csv
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlencode, urlparse

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
VENV_BIN = Path(sys.executable).parent
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/offchat_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
CONFIG = {
    "DJANGO_SETTINGS_MODULE": "bench.settings",
    "DATABASE_URL": DATABASE_URL,
    "REDIS_URL": REDIS_URL,
    "READ_DOT_ENV_FILE": "false",
    # Tokens are minted once, up front, for the whole run.
    "JWT_ACCESS_TOKEN_MINUTES": "600",
    "LOG_LEVEL": "WARNING",
}
os.environ.update(CONFIG)
sys.path.insert(0, str(REPO))

# Rows 4-6 share one table: the largest sweep size, `online` users online, `stale` present
# but silent past the timeout (`stale_of_several` of them only on one of their 2-3 sessions).
# The sweep's baseline is a smaller table with the same online and stale users: 200,000 users,
# the smallest round size that holds 110,000 present ones with offline users besides.
FULL = {
    "sweep_sizes": [200_000, 1_000_000],
    "online": 100_000,
    "stale": 10_000,
    "stale_of_several": 1_000,
    "churn": 0.01,
    "sweep_trials": 7,
    "load_seconds": 12,
    "load_rounds": 3,
    "token_users": 2_000,
    "capacity_levels": [2_500, 5_000, 7_500, 10_000, 12_500, 15_000],
    "history_users": 1_000_000,
    "capacity_probe_seconds": 45,
    "capacity_sustain_seconds": 180,
    "gunicorn_workers": 3,
}
QUICK = {  # FULL's rows 4-6 divided by 500
    "sweep_sizes": [400, 2_000],
    "online": 200,
    "stale": 20,
    "stale_of_several": 2,
    "churn": 0.01,
    "sweep_trials": 3,
    "load_seconds": 2,
    "load_rounds": 1,
    "token_users": 100,
    "capacity_levels": [50, 100],
    "history_users": 1_000,
    "capacity_probe_seconds": 4,
    "capacity_sustain_seconds": 6,
    "gunicorn_workers": 2,
}
GOALS = {
    "heartbeat_vs_noop": 0.85,
    "middleware_on_vs_off": 0.95,
    "writes_per_user_minute": 2,
    "sweep_ms_at_largest": 250,
    "sweep_ratio": 1.5,
    "admin_list_p50_ms": 10,
    "admin_list_p99_ms": 50,
    "feed_vs_full": 0.05,
    "feed_poll_p50_ms": 20,
    "capacity_clients": 10_000,
    "timeline_7d_p50_ms": 50,
}


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- Database -------------------------------------------------------------------------
def recreate_database():
    import psycopg2

    url = urlparse(DATABASE_URL)
    name = url.path.lstrip("/")
    admin = psycopg2.connect(
        dbname="postgres", user=url.username, password=url.password, host=url.hostname, port=url.port or 5432
    )
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    admin.close()


def setup_django():
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def execute(sql, params=None):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else None


def copy_rows(table, columns, rows):
    from django.db import connection

    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_NONNUMERIC)  # "" is an empty string, not NULL
    sql = f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)"
    with connection.cursor() as cursor:
        for count, row in enumerate(rows, 1):
            writer.writerow(row)
            if count % 200_000 == 0:
                buffer.seek(0)
                cursor.cursor.copy_expert(sql, buffer)
                buffer.seek(0)
                buffer.truncate()
        buffer.seek(0)
        cursor.cursor.copy_expert(sql, buffer)


USER_COLUMNS = [
    "id", "password", "is_superuser", "username", "first_name", "last_name", "email", "is_staff", "is_active",
    "date_joined", "online_status", "last_seen", "last_active", "share_presence", "presence_update_id",
]  # fmt: skip
SESSION_COLUMNS = [
    "id", "user_id", "user_agent", "created_at", "last_seen", "last_active", "reported_status", "end_reason",
]  # fmt: skip


def seed(*, total, online, stale, several=0):
    """`total` users: ids 1..online online (id 1 is staff), the next `stale` online but silent
    for an hour, the rest offline; a live session for each online and stale user, and an open
    history interval for each. The last `several` stale users are silent on one session only:
    they also have one or two fresh ones (every tenth's report away), so their row is fresh
    and a sweep must end that one session and keep them present. COPY, not the ORM."""
    from django.contrib.auth.hashers import make_password
    from django.utils import timezone

    execute(
        "TRUNCATE users, presence_sessions, presence_tombstones, presence_intervals, "
        "online_users_onlineuseractivity, token_blacklist_outstandingtoken, token_blacklist_blacklistedtoken "
        "RESTART IDENTITY CASCADE"
    )
    now = timezone.now()
    password = make_password("bench-password")
    hour_ago = now - timedelta(hours=1)
    first_of_several = online + stale - several + 1

    def fresh(user_id):
        return now - timedelta(seconds=user_id % 20)

    def users():
        for user_id in range(1, total + 1):
            if user_id <= online or first_of_several <= user_id <= online + stale:
                status, seen = "online", fresh(user_id)
            elif user_id <= online + stale:
                status, seen = "online", hour_ago
            else:
                # Spread over a month, as real ones are: a histogram, not a few common values.
                status, seen = "offline", now - timedelta(days=1, seconds=user_id * 7919 % (29 * 86400))
            staff = user_id == 1
            yield [
                user_id, password, staff, f"user{user_id:07d}", "Bench", f"User {user_id}",
                f"user{user_id}@example.com", staff, True, now.isoformat(), status, seen.isoformat(),
                seen.isoformat(), True, 0,
            ]  # fmt: skip

    def sessions():
        for user_id in range(1, online + stale + 1):
            seen = (fresh(user_id) if user_id <= online else hour_ago).isoformat()
            yield [uuid.uuid4(), user_id, "bench", seen, seen, seen, "online", ""]
            if user_id >= first_of_several:
                seen, report = fresh(user_id).isoformat(), "away" if user_id % 10 == 0 else "online"
                for _ in range(1 + user_id % 2):
                    yield [uuid.uuid4(), user_id, "bench", seen, seen, seen, report, ""]

    def intervals():
        started = (hour_ago - timedelta(minutes=1)).isoformat()
        for user_id in range(1, online + stale + 1):
            yield [user_id, "online", started]

    started = time.perf_counter()
    copy_rows("users", USER_COLUMNS, users())
    copy_rows("presence_sessions", SESSION_COLUMNS, sessions())
    copy_rows("presence_intervals", ["user_id", "status", "started_at"], intervals())
    execute("SELECT setval(pg_get_serial_sequence('users', 'id'), %s)", [total])
    execute("VACUUM ANALYZE users")
    execute("VACUUM ANALYZE presence_sessions")
    execute("VACUUM ANALYZE presence_intervals")
    return now, time.perf_counter() - started


def refresh_online(*, online):
    """Make the online users' activity recent again: the clock moved on during the run."""
    execute("UPDATE users SET last_seen = now(), last_active = now() WHERE id <= %s", [online])
    execute(
        "UPDATE presence_sessions SET last_seen = now(), last_active = now(), ended_at = NULL, end_reason = '' "
        "WHERE user_id <= %s AND revoked_at IS NULL",
        [online],
    )


def table_stats():
    # Backends report their counts lazily; this one's own updates must land before a snapshot.
    execute("SELECT pg_stat_force_next_flush()")
    execute("SELECT 1")
    time.sleep(1.5)
    rows = execute(
        "SELECT relname, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
        "WHERE relname IN ('users', 'presence_sessions')"
    )
    return {name: {"updates": updates, "hot": hot} for name, updates, hot in rows}


# --- Tokens and processes -------------------------------------------------------------
CLIENT_AGENT = "bench-client"  # the sessions of mint_tokens, apart from seed()'s


def mint_tokens(*, user_ids, path):
    """Access tokens as login issues them, for live sessions made here in bulk."""
    from django.utils import timezone
    from rest_framework_simplejwt.tokens import AccessToken

    from users.models import User
    from users.selectors.sessions import SESSION_CLAIM

    now = timezone.now().isoformat()
    session_ids = [uuid.uuid4() for _ in user_ids]
    copy_rows(
        "presence_sessions",
        SESSION_COLUMNS,
        ([sid, uid, CLIENT_AGENT, now, now, now, "online", ""] for sid, uid in zip(session_ids, user_ids, strict=True)),
    )
    execute(
        "UPDATE users SET online_status = 'online', last_seen = now(), last_active = now() WHERE id = ANY(%s)",
        [list(user_ids)],
    )
    with open(path, "w") as tokens:
        for session_id, user_id in zip(session_ids, user_ids, strict=True):
            token = AccessToken.for_user(User(pk=user_id, is_active=True))
            token[SESSION_CLAIM] = str(session_id)
            tokens.write(f"{token}\n")
    return path


def keep_clients_connected():
    """The clients of mint_tokens (their live sessions) as connected clients are: heard from
    now. A round that starts more than PRESENCE_INACTIVITY_TIMEOUT after their last write
    would otherwise measure 2,000 users coming back online within seconds, each a status
    change serialized on the feed's counter (bench/analysis.md, row 2), not a request's cost."""
    execute(
        "UPDATE presence_sessions SET last_seen = now(), last_active = now() "
        "WHERE user_agent = %s AND ended_at IS NULL AND revoked_at IS NULL",
        [CLIENT_AGENT],
    )
    execute(
        "UPDATE users SET last_seen = now(), last_active = now() WHERE online_status IN ('online', 'away') "
        "AND id IN (SELECT user_id FROM presence_sessions WHERE user_agent = %s AND ended_at IS NULL "
        "AND revoked_at IS NULL)",
        [CLIENT_AGENT],
    )


def free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# gunicorn's worker classes compared for the HTTP API (--only workers): the class's flags, the
# application it serves and its environment. gthread: 4 threads a worker (Django's connections
# are per thread, CONN_MAX_AGE keeps them); uvicorn: the ASGI application, Django's sync views
# in its thread pool, with no persistent connections (Django's advice under ASGI: with
# CONN_MAX_AGE each request's thread kept one open, and 3 workers ran PostgreSQL's 100 out).
WORKER_CLASSES = {
    "sync": ([], "offchat_backend.wsgi:application", {}),
    "gthread": (["--worker-class=gthread", "--threads=4"], "offchat_backend.wsgi:application", {}),
    "uvicorn": (
        ["--worker-class=uvicorn_worker.UvicornWorker"],
        "offchat_backend.asgi:application",
        {"CONN_MAX_AGE": "0"},
    ),
}


@contextmanager
def gunicorn(*, workers, middleware=True, throttles=False, log_path, worker_class="sync", environment=None):
    """gunicorn serving the project with the benchmark's settings, `environment` over them (a
    server that differs in one setting: bench/heartbeat_floor.py); its URL while it runs."""
    import urllib.error
    import urllib.request

    port = free_port()
    flags, application, class_env = WORKER_CLASSES[worker_class]
    env = {
        **os.environ,
        "BENCH_PRESENCE_MIDDLEWARE": "1" if middleware else "0",
        "BENCH_THROTTLES": "1" if throttles else "0",
        **class_env,
        **(environment or {}),
    }
    command = [
        str(VENV_BIN / "gunicorn"), application, f"--bind=127.0.0.1:{port}",
        f"--workers={workers}", "--backlog=2048", "--timeout=60", *flags,
    ]  # fmt: skip
    with open(log_path, "ab") as output:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/api/health/", timeout=1)
                break
            except urllib.error.HTTPError:
                break  # 503 before any sweep: it answers
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError(f"gunicorn did not start; see {log_path}")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def wrk(url, *, tokens, seconds, method="GET", body=None, connections=16, threads=2):
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH / "wrk.lua"),
        url,
    ]
    command += ["--", str(tokens), method] + ([body] if body else [])
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    result = json.loads(re.search(r"BENCH_RESULT (\{.*\})", output).group(1))
    return {
        "rps": result["requests"] / (result["duration_us"] / 1e6),
        "p50_ms": result["p50_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "requests": result["requests"],
        "errors": result["errors"],
    }


def median_of(runs, key):
    return statistics.median(run[key] for run in runs)


# --- Rows -------------------------------------------------------------------------------
def writes_per_user_minute():
    """Row 3, in process: one client, 60 simulated seconds (time-machine): a heartbeat every
    30 s and one other request every second. Counts the statements that wrote rows, each
    written in its request (PRESENCE_WRITE_BATCH_INTERVAL=0): deferred, they would be written
    by another thread, which this counter does not see, and merged with the same second's
    others, so these counts are the most a client makes its server write."""
    import time_machine
    from django.db import connection
    from django.test import override_settings
    from django.utils import timezone
    from online_users.models import OnlineUserActivity
    from rest_framework.test import APIClient

    from users.models import User
    from users.services import auth

    def simulate(*, after_request=lambda user: None):
        user = User.objects.create(username=f"writer-{uuid.uuid4().hex[:8]}")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {auth.log_in(user=user).access}")
        writes = {"statements": 0, "rows": 0, "requests_that_wrote": 0}
        wrote_now = []

        def count(execute, sql, params, many, context):
            result = execute(sql, params, many, context)
            verb = sql.lstrip().split(None, 1)[0].upper()
            rows = max(context["cursor"].rowcount, 0) if verb in {"INSERT", "UPDATE", "DELETE"} else 0
            if verb == "WITH" and " UPDATE " in sql:
                # The heartbeat's one statement (users.services.presence) answers whether it
                # wrote its two rows; the row is read and the cursor put back for its caller.
                cursor = context["cursor"].cursor
                rows = 2 if cursor.fetchone()[0] else 0
                cursor.scroll(0, mode="absolute")
            if rows:
                writes["statements"] += 1
                writes["rows"] += rows
                wrote_now.append(rows)
            return result

        start = timezone.now() + timedelta(seconds=31)  # after the login's own write
        with time_machine.travel(start, tick=False) as traveller, connection.execute_wrapper(count):
            for second in range(60):
                traveller.move_to(start + timedelta(seconds=second))
                wrote_now.clear()
                if second % 30 == 0:
                    assert client.post("/api/users/heartbeat/", format="json").status_code == 200
                assert client.get("/api/users/me/").status_code == 200
                after_request(user)
                writes["requests_that_wrote"] += bool(wrote_now)
        return writes

    with override_settings(PRESENCE_WRITE_BATCH_INTERVAL=0):
        ours = simulate()
        with override_settings(PRESENCE_WRITE_GRANULARITY=0):
            naive = simulate()
        # What django-online-users' middleware writes when it sees the user: an upsert per
        # request. (As shipped it reads request.user before DRF authenticates the JWT, so for a
        # JWT client it sees an anonymous user and records nothing at all.)
        package = simulate(after_request=lambda user: OnlineUserActivity.update_user_activity(user))
    package = {key: package[key] - ours[key] for key in ours}
    return {"ours": ours, "naive_write_per_request": naive, "django_online_users": package}


def sweep(*, total, online, stale, several, trials):
    """Row 4, in process: the sweep over `total` users of which `online` are online and
    `stale` have been silent past the timeout, `several` of these on one of several sessions
    only. Median of `trials`; the statements of one sweep; the result checked; query plans."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from users.services import presence

    seeded_at, seed_seconds = seed(total=total, online=online, stale=stale, several=several)
    first, last = online + 1, online + stale
    first_of_several = last - several + 1
    now = seeded_at + timedelta(seconds=1)

    def reset():
        reset_sweep(first=first, last=last, now=now)

    timings = []
    for _ in range(trials):
        reset()
        started = time.perf_counter()
        marked = presence.mark_inactive_users_offline(now=now)
        timings.append((time.perf_counter() - started) * 1000)
        assert marked == stale - several, (marked, stale, several)
    check = _check_sweep(now=now, first=first, first_of_several=first_of_several, last=last)
    assert check["passed"], check

    # One sweep's statements, counted as it runs for real (committed, like the trials).
    reset()
    with CaptureQueriesContext(connection) as queries:
        presence.mark_inactive_users_offline(now=now)
    statements = {}
    for query in queries:
        verb = query["sql"].lstrip().split(" ", 1)[0].upper()
        statements[verb] = statements.get(verb, 0) + 1

    reset()
    plans = []
    with transaction.atomic():
        for query in queries:
            sql = query["sql"]
            if sql.startswith("SELECT") and ("users" in sql or "presence_sessions" in sql):
                plan = "\n".join(row[0] for row in execute("EXPLAIN (ANALYZE, BUFFERS) " + sql))
                plans.append({"sql": sql[:160], "plan": plan, "seq_scan_on_users": "Seq Scan on users" in plan})
        transaction.set_rollback(True)
    return {
        "users": total,
        "online": online,
        "stale": stale,
        "stale_of_several": several,
        "seed_seconds": seed_seconds,
        "median_ms": statistics.median(timings),
        "trials_ms": timings,
        "statements": len(queries),
        "statements_by_kind": statements,
        "check": check,
        "plans": plans,
    }


def reset_sweep(*, first, last, now):
    """Back to the seeded state of users first..last (the stale ones), the tables vacuumed as
    autovacuum would have, and the previous sweep a minute ago (beat's schedule: what it
    recorded then is not read again)."""
    execute("UPDATE users SET online_status = 'online' WHERE id BETWEEN %s AND %s", [first, last])
    execute(
        "UPDATE presence_sessions SET ended_at = NULL, end_reason = '' WHERE user_id BETWEEN %s AND %s",
        [first, last],
    )
    execute("DELETE FROM presence_intervals WHERE user_id BETWEEN %s AND %s AND status = 'away'", [first, last])
    execute("UPDATE presence_intervals SET ended_at = NULL WHERE user_id BETWEEN %s AND %s", [first, last])
    execute("UPDATE presence_sweep SET finished_at = %s", [now - timedelta(minutes=1)])
    execute("VACUUM users, presence_sessions, presence_intervals")


def _check_sweep(*, now, first, first_of_several, last):
    """After a sweep: the wholly silent users offline; the users silent on one session only
    still present (online, or away where their remaining sessions report away), that session
    ended as idle and their fresh ones live."""
    from users.presence_rules import inactivity_timeout

    cutoff = now - inactivity_timeout()
    wholly = dict(
        execute(
            "SELECT online_status, count(*) FROM users WHERE id BETWEEN %s AND %s GROUP BY 1",
            [first, first_of_several - 1],
        )
    )
    several = dict(
        execute(
            "SELECT online_status, count(*) FROM users WHERE id BETWEEN %s AND %s GROUP BY 1",
            [first_of_several, last],
        )
    )
    expected_away = sum(1 for user_id in range(first_of_several, last + 1) if user_id % 10 == 0)
    (silent_ended, silent_live, fresh_ended, fresh_live) = execute(
        """
        SELECT count(*) FILTER (WHERE last_seen < %(cutoff)s AND end_reason = 'idle' AND ended_at IS NOT NULL),
               count(*) FILTER (WHERE last_seen < %(cutoff)s AND ended_at IS NULL),
               count(*) FILTER (WHERE last_seen >= %(cutoff)s AND ended_at IS NOT NULL),
               count(*) FILTER (WHERE last_seen >= %(cutoff)s AND ended_at IS NULL)
        FROM presence_sessions WHERE user_id BETWEEN %(first)s AND %(last)s
        """,
        {"cutoff": cutoff, "first": first_of_several, "last": last},
    )[0]
    users = last - first_of_several + 1
    return {
        "wholly_silent_users": dict(wholly),
        "users_silent_on_one_session": dict(several),
        "their_silent_sessions_ended": silent_ended,
        "their_silent_sessions_still_live": silent_live,
        "their_fresh_sessions_live": fresh_live,
        "their_fresh_sessions_ended": fresh_ended,
        "passed": wholly == {"offline": first_of_several - first}
        and several.get("online", 0) == users - expected_away
        and several.get("away", 0) == expected_away
        and silent_ended == users
        and silent_live == 0
        and fresh_ended == 0
        and fresh_live > 0,
    }


def history_timeline(*, users, days=7, trials=21):
    """Row 8, in process: a 7-day timeline at one-minute steps (the admin chart's longest
    read: the query, the points and the JSON body the endpoint answers), over a week of
    `users` users' history seeded with COPY (an online and an away interval a day each) and
    a count for every minute of the week. Baseline, same run: the same read before any
    interval exists. Also one user's week (per-day totals)."""
    from zoneinfo import ZoneInfo

    from django.core.cache import cache
    from django.utils import timezone
    from rest_framework.renderers import JSONRenderer

    from users.api.history import timeline_points_json
    from users.models import User
    from users.selectors import history

    execute("TRUNCATE presence_intervals, presence_counts RESTART IDENTITY")
    now = timezone.now().replace(second=0, microsecond=0)
    start = now - timedelta(days=days)
    minutes = days * 24 * 60
    copy_rows(
        "presence_counts",
        ["at", "online", "away", "offline"],
        ([(start + timedelta(minutes=m)).isoformat(), 1000 + m % 500, 200 + m % 50, users] for m in range(minutes)),
    )
    execute("VACUUM ANALYZE presence_counts")

    def read(trials, *, late=timedelta(0)):
        """What the endpoint does: the points (past hours from the cache, which starts
        empty: the first trial reads the whole week), and the JSON body. Returns the cold
        first trial and the warm ones. `late`: read that long into the current minute, so
        that the week ends with the live point (one status_counts over the users table), as
        the dashboard's reads do; its week starts a minute later."""
        cache.clear()
        timings = []
        first, until = (start + timedelta(minutes=1) if late else start), now + late
        for _ in range(trials + 1):
            started = time.perf_counter()
            points = timeline_points_json(start=first, end=until, step=timedelta(minutes=1), now=until)
            head = JSONRenderer().render({"from": first, "to": until, "step_seconds": 60})
            body = head[:-1] + b',"points":' + points.encode() + b"}"
            timings.append((time.perf_counter() - started) * 1000)
            answer = json.loads(body)["points"]
            assert len(answer) == minutes and answer[-1]["partial"] == bool(late), body[:200]
        return timings[0], timings[1:]

    baseline_cold, baseline = read(trials)
    seed_started = time.perf_counter()
    existing = execute("SELECT count(*) FROM users")[0][0]
    if existing < users:
        execute("TRUNCATE users RESTART IDENTITY CASCADE")
        copy_rows(
            "users",
            USER_COLUMNS,
            (
                [
                    user_id,
                    "!",
                    False,
                    f"h{user_id:07d}",
                    "",
                    "",
                    "",
                    False,
                    True,
                    now.isoformat(),
                    "offline",
                    now.isoformat(),
                    now.isoformat(),
                    True,
                    0,
                ]  # fmt: skip
                for user_id in range(1, users + 1)
            ),
        )

    def intervals():
        for day in range(days):
            midnight = start + timedelta(days=day)
            for user_id in range(1, users + 1):
                online_from = midnight + timedelta(minutes=user_id % 600)
                away_from = online_from + timedelta(hours=2)
                yield [user_id, "online", online_from.isoformat(), away_from.isoformat()]
                yield [user_id, "away", away_from.isoformat(), (away_from + timedelta(minutes=30)).isoformat()]

    copy_rows("presence_intervals", ["user_id", "status", "started_at", "ended_at"], intervals())
    execute("VACUUM ANALYZE presence_intervals")
    seed_seconds = time.perf_counter() - seed_started
    loaded_cold, loaded = read(trials)
    _, live = read(trials, late=timedelta(seconds=30))
    user = User.objects.get(pk=users // 2)
    user_timings = []
    for _ in range(trials):
        started = time.perf_counter()
        week = history.user_history(user=user, start=start, end=now, tz=ZoneInfo("Europe/Berlin"), now=now)
        user_timings.append((time.perf_counter() - started) * 1000)
    return {
        "users": users,
        "intervals": execute("SELECT count(*) FROM presence_intervals")[0][0],
        "seed_seconds": seed_seconds,
        "timeline_points": minutes,
        "timeline_p50_ms": statistics.median(loaded),
        "timeline_p99_ms": max(loaded),
        "timeline_cold_ms": loaded_cold,
        "timeline_live_p50_ms": statistics.median(live),
        "baseline_cold_ms": baseline_cold,
        "baseline_p50_ms": statistics.median(baseline),
        "ratio": statistics.median(loaded) / statistics.median(baseline),
        "user_week_p50_ms": statistics.median(user_timings),
        "user_week_days": len(week.days),
    }


def heartbeat(*, online):
    """Every connected user heartbeats: users 1..online and anyone present heard from in the
    last 100 s get their activity moved to now (no status change, no feed id). Then VACUUM
    (no ANALYZE), as HOT pruning and autovacuum keep a live table: one bulk UPDATE is not
    the spread-out heartbeats it stands for."""
    execute(
        "UPDATE users SET last_seen = now(), last_active = now() WHERE online_status IN ('online', 'away') "
        "AND (id <= %s OR last_seen > now() - interval '100 seconds')",
        [online],
    )
    execute("VACUUM users")


def make_statistics_stale(*, online):
    """The planner's statistics as a live server has them: ANALYZE sees the online users'
    activity ten minutes old, then heartbeats move it to now with no ANALYZE since
    (autovacuum is off on `users` for rows 5 and 6), so every present user's last_seen and
    last_active lie past the end of the histogram."""
    execute("ALTER TABLE users SET (autovacuum_enabled = off)")
    execute(
        "UPDATE users SET last_seen = now() - interval '10 minutes' - id %% 300 * interval '1 second', "
        "last_active = now() - interval '10 minutes' - id %% 300 * interval '1 second' "
        "WHERE id <= %s OR (online_status IN ('online', 'away') AND last_seen > now() - interval '10 minutes')",
        [online],
    )
    execute("VACUUM ANALYZE users")
    heartbeat(online=online)
    # The newest last_seen the statistics know of: the histogram's end, or a common value.
    histogram_end, analyzed_at = execute(
        "SELECT GREATEST((SELECT max(v) FROM unnest(histogram_bounds::text::timestamptz[]) v), "
        "(SELECT max(v) FROM unnest(most_common_vals::text::timestamptz[]) v)), "
        "(SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'users') "
        "FROM pg_stats WHERE tablename = 'users' AND attname = 'last_seen'"
    )[0]
    oldest_online = execute("SELECT min(last_seen) FROM users WHERE id <= %s", [online])[0][0]
    return {
        "analyzed_at": analyzed_at,
        "statistics_know_last_seen_until": histogram_end,
        "online_users_last_seen_from": oldest_online,
        "stale": oldest_online > histogram_end,
    }


def explain(sql, params=None):
    return "\n".join(row[0] for row in execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params))


def admin_list(*, online, workers, seconds, rounds, log_path):
    """Row 5: `?online_status=online` through gunicorn (wrk), with the planner's statistics
    stale on purpose (make_statistics_stale); queries per request in process; the plans of
    the page and of its count; and the same page with the rule as plain comparisons (the
    form before users.selectors.accounts.shown_status), in the same run."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone
    from rest_framework.test import APIClient

    from users.models import OnlineStatus, User
    from users.presence_rules import status_q
    from users.selectors import accounts
    from users.services import auth

    statistics_ = make_statistics_stale(online=online)
    client = APIClient()
    staff_token = auth.log_in(user=User.objects.get(pk=1)).access
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {staff_token}")
    queries, captured_online_page = {}, None
    for label, params in {
        "online, 10 rows": {"online_status": "online", "page_size": 10},
        "online, 50 rows": {"online_status": "online", "page_size": 50},
        "online, 200 rows": {"online_status": "online", "page_size": 200},
        "all, 50 rows": {"page_size": 50},
    }.items():
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            response = client.get("/api/users/admin/users/", params)
            elapsed = (time.perf_counter() - started) * 1000
        assert response.status_code == 200, response.content[:200]
        body = response.json()
        queries[label] = {
            "queries": len(captured),
            "in_process_ms": elapsed,
            "sql_ms": sum(float(query["time"]) for query in captured) * 1000,
            "count": body["count"],
            "count_capped": body["count_capped"],
        }
        if label == "online, 50 rows":
            captured_online_page = [query["sql"] for query in captured]
    page_sql = next(sql for sql in captured_online_page if 'FROM "users"' in sql and "LIMIT 50" in sql)
    count_sql = next(sql for sql in captured_online_page if "COUNT(" in sql)
    now = timezone.now()
    plain = accounts.users_for_admin().filter(status_q(OnlineStatus.ONLINE, now=now))
    started = time.perf_counter()
    plain_count = plain.count()
    plain_count_ms = (time.perf_counter() - started) * 1000
    plans = {
        "page": explain(page_sql),
        "count": explain(count_sql),
        "page_with_the_rule_as_plain_comparisons": explain(*plain[:50].query.sql_with_params()),
    }
    deep = User.objects.count() // 50
    started = time.perf_counter()
    assert client.get("/api/users/admin/users/", {"page": deep}).status_code == 200
    deep_ms = (time.perf_counter() - started) * 1000
    # The same depth with ?paging=keyset: a position (DRF's cursor format), no OFFSET, no COUNT.
    last_username = User.objects.order_by("-username").values_list("username", flat=True)[49]
    after = base64.b64encode(urlencode({"p": last_username}).encode()).decode()
    started = time.perf_counter()
    keyset = client.get("/api/users/admin/users/", {"paging": "keyset", "after": after})
    keyset_deep_ms = (time.perf_counter() - started) * 1000
    assert keyset.status_code == 200 and len(keyset.json()["results"]) == 49, keyset.content[:200]

    staff_tokens = BENCH / ".staff-token.txt"
    staff_tokens.write_text(staff_token + "\n")
    runs, noop = [], []
    with gunicorn(workers=workers, log_path=log_path) as url:
        for _ in range(rounds):
            heartbeat(online=online)  # nobody times out between rounds
            # Fewer connections than workers: the latency of a request, not of a queue. In
            # alternating rounds with the no-op behind the same authentication: the stack's floor.
            for path, into in (("/api/users/admin/users/?online_status=online", runs), ("/bench/noop/", noop)):
                into.append(wrk(url + path, tokens=staff_tokens, seconds=seconds, connections=workers - 1, threads=1))
    staff_tokens.unlink()
    assert not any(run["errors"] for run in runs + noop), runs + noop
    statistics_["still_stale"] = execute(
        "SELECT last_analyze IS NOT DISTINCT FROM %s AND last_autoanalyze IS NULL FROM pg_stat_user_tables "
        "WHERE relname = 'users'",
        [statistics_["analyzed_at"]],
    )[0][0]
    return {
        "users": User.objects.count(),
        "online": online,
        "wrk": runs,
        "p50_ms": median_of(runs, "p50_ms"),
        "p99_ms": median_of(runs, "p99_ms"),
        "noop": noop,
        "noop_p50_ms": median_of(noop, "p50_ms"),
        "noop_p99_ms": median_of(noop, "p99_ms"),
        "queries": queries,
        "statistics": statistics_,
        "plans": plans,
        "plain_rule_exact_count": plain_count,
        "plain_rule_exact_count_ms": plain_count_ms,
        "deepest_page": deep,
        "deepest_page_ms": deep_ms,
        "keyset_deepest_page_ms": keyset_deep_ms,
    }


def feed_poll(*, online, churn, workers, seconds, rounds, trials, log_path):
    """Row 6: an admin watching the online list (`?online_status=online`) of `online` users
    polls it after `churn` of them changed (half signed out, as many others signed in): the
    change feed's bytes against reloading the whole list (keyset pages of 200), and the
    poll's latency through gunicorn (wrk, the same poll again and again) and in process.
    Runs on rows 4 and 5's table."""
    from urllib.parse import quote

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    from users.models import PresenceSession, SessionEndReason, User
    from users.services import auth, presence

    # The silent users stay silent, long past any limit: none crosses one during the row.
    execute(
        "UPDATE users SET last_seen = now() - interval '1 hour', last_active = now() - interval '1 hour' "
        "WHERE id > %s AND online_status IN ('online', 'away')",
        [online],
    )
    heartbeat(online=online)
    staff_token = auth.log_in(user=User.objects.get(pk=1)).access
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {staff_token}")
    path = "/api/users/admin/users/"
    full_bytes, pages, cursor = 0, 0, None
    url, params = path, {"online_status": "online", "paging": "keyset", "page_size": 200}
    while url:
        if pages % 100 == 99:
            heartbeat(online=online)  # a slow walk must not outlast the timeout
        response = client.get(url, params)
        assert response.status_code == 200, response.content[:200]
        full_bytes += len(response.content)
        pages += 1
        body = response.json()
        cursor = cursor or body["cursor"]
        url, params = body["next"], None

    changed = max(2, round(online * churn))
    leaving = list(
        PresenceSession.objects.filter(user_id__gte=2, user_id__lte=online, ended_at__isnull=True).order_by("-user_id")[
            : changed // 2
        ]
    )
    for session in leaving:
        presence.end_session(session=session, reason=SessionEndReason.LOGOUT)
    arriving = list(User.objects.filter(online_status="offline").order_by("-id")[: changed - changed // 2])
    for user in arriving:
        presence.start_session(user=user)
    heartbeat(online=online)

    poll = {"online_status": "online", "since": cursor}
    timings = []
    for _ in range(trials):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            feed = client.get(path, poll)
            timings.append((time.perf_counter() - started) * 1000)
    # Where the last poll's time went: each query (as the client saw it), the rest is Python.
    poll_queries = [{"ms": float(query["time"]) * 1000, "sql": query["sql"][:120]} for query in captured]
    assert feed.status_code == 200, feed.content[:200]
    body = feed.json()
    assert {row["id"] for row in body["results"]} == {user.pk for user in arriving}, len(body["results"])
    assert {session.user_id for session in leaving} <= set(body["removed"]), len(body["removed"])

    staff_tokens = BENCH / ".staff-token.txt"
    staff_tokens.write_text(staff_token + "\n")
    runs, noop = [], []
    with gunicorn(workers=workers, log_path=log_path) as url:
        for _ in range(rounds):
            heartbeat(online=online)
            for target, into in ((f"{path}?online_status=online&since={quote(cursor)}", runs), ("/bench/noop/", noop)):
                into.append(wrk(url + target, tokens=staff_tokens, seconds=seconds, connections=workers - 1, threads=1))
    staff_tokens.unlink()
    assert not any(run["errors"] for run in runs + noop), runs + noop  # a resync (400) would count here
    return {
        "users": User.objects.count(),
        "online": online,
        "changed": changed,
        "left": len(leaving),
        "arrived": len(arriving),
        "feed_results": len(body["results"]),
        "feed_removed": len(body["removed"]),
        "full_list_bytes": full_bytes,
        "full_list_pages": pages,
        "feed_bytes": len(feed.content),
        "ratio": len(feed.content) / full_bytes,
        "in_process_ms": timings,
        "in_process_p50_ms": statistics.median(timings),
        "in_process_queries": poll_queries,
        "wrk": runs,
        "p50_ms": median_of(runs, "p50_ms"),
        "p99_ms": median_of(runs, "p99_ms"),
        "noop": noop,
        "noop_p50_ms": median_of(noop, "p50_ms"),
    }


def throughput(*, tokens_path, workers, seconds, rounds, log_path):
    """Rows 1 and 2: heartbeat vs a no-op with the same authentication, and an ordinary read
    with the presence middleware on vs off. Alternating rounds; medians."""
    before = table_stats()
    heartbeat, noop, stock_noop, heartbeat_in_production = [], [], [], []
    # Two servers, one with production's throttles (counters in Redis): the heartbeat as
    # production runs it is measured in the same alternating rounds as the no-op.
    with (
        gunicorn(workers=workers, log_path=log_path) as url,
        gunicorn(workers=workers, throttles=True, log_path=log_path) as throttled_url,
    ):
        for warm_up in (f"{url}/bench/noop/", f"{throttled_url}/api/users/heartbeat/"):
            wrk(warm_up, tokens=tokens_path, seconds=1, method="POST", body="{}")  # connections and caches
        for _ in range(rounds):
            noop.append(wrk(f"{url}/bench/noop/", tokens=tokens_path, seconds=seconds, method="POST", body="{}"))
            heartbeat.append(
                wrk(f"{url}/api/users/heartbeat/", tokens=tokens_path, seconds=seconds, method="POST", body="{}")
            )
            heartbeat_in_production.append(
                wrk(
                    f"{throttled_url}/api/users/heartbeat/",
                    tokens=tokens_path,
                    seconds=seconds,
                    method="POST",
                    body="{}",
                )  # fmt: skip
            )
            stock_noop.append(
                wrk(f"{url}/bench/noop-stock-jwt/", tokens=tokens_path, seconds=seconds, method="POST", body="{}")
            )
    after_heartbeats = table_stats()
    middleware = {True: [], False: []}
    for _ in range(rounds):
        for enabled in (True, False):
            keep_clients_connected()
            with gunicorn(workers=workers, middleware=enabled, log_path=log_path) as url:
                wrk(f"{url}/api/users/me/", tokens=tokens_path, seconds=1)
                middleware[enabled].append(wrk(f"{url}/api/users/me/", tokens=tokens_path, seconds=seconds))
    # What production's throttles (counters in Redis) add to the heartbeat, which the rows above
    # measure without them.
    throttled = {True: [], False: []}
    for _ in range(rounds):
        for enabled in (True, False):
            keep_clients_connected()
            with gunicorn(workers=workers, throttles=enabled, log_path=log_path) as url:
                heartbeat_url = f"{url}/api/users/heartbeat/"
                wrk(heartbeat_url, tokens=tokens_path, seconds=1, method="POST", body="{}")
                throttled[enabled].append(
                    wrk(heartbeat_url, tokens=tokens_path, seconds=seconds, method="POST", body="{}")
                )
    heartbeat_requests = sum(run["requests"] for run in heartbeat) + sum(run["requests"] for run in noop)
    hot = {
        table: {
            "updates": after_heartbeats[table]["updates"] - before[table]["updates"],
            "hot": after_heartbeats[table]["hot"] - before[table]["hot"],
        }
        for table in before
    }
    return {
        "heartbeat": heartbeat,
        "noop": noop,
        "heartbeat_vs_noop": median_of(heartbeat, "rps") / median_of(noop, "rps"),
        "heartbeat_throttled": heartbeat_in_production,
        "heartbeat_throttled_vs_noop": median_of(heartbeat_in_production, "rps") / median_of(noop, "rps"),
        "stock_jwt_noop": stock_noop,
        "session_check_cost": median_of(noop, "rps") / median_of(stock_noop, "rps"),
        "middleware_on": middleware[True],
        "middleware_off": middleware[False],
        "middleware_on_vs_off": median_of(middleware[True], "rps") / median_of(middleware[False], "rps"),
        "heartbeat_throttles_on": throttled[True],
        "heartbeat_throttles_off": throttled[False],
        "heartbeat_throttles_on_vs_off": median_of(throttled[True], "rps") / median_of(throttled[False], "rps"),
        "hot_updates": hot,
        "requests_during_hot_window": heartbeat_requests,
    }


def capacity(*, levels, probe_seconds, sustain_seconds, workers, log_path, worker_class="sync"):
    """Row 7: the most clients (30 s heartbeats, a read a minute) held with p99 < 100 ms and
    no errors: a probe per level, then the best level sustained (sustain_seconds=0: probes
    only)."""
    tokens_path = BENCH / ".capacity-tokens.txt"
    mint_tokens(user_ids=range(1, max(levels) + 1), path=tokens_path)
    probes, best = [], None
    with gunicorn(workers=workers, log_path=log_path, worker_class=worker_class) as url:

        def run(clients, seconds):
            command = [
                str(VENV_BIN / "python"), str(BENCH / "load.py"), "--url", url, "--tokens", str(tokens_path),
                "--clients", str(clients), "--duration", str(seconds),
            ]  # fmt: skip
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            return json.loads(output.strip().splitlines()[-1])

        run(min(levels[0], 100), 3)  # warm up every worker and the connection pool
        for clients in levels:
            probe = run(clients, probe_seconds)
            probe["passed"] = probe["errors"] == 0 and probe["p99_ms"] is not None and probe["p99_ms"] < 100
            probes.append(probe)
            log(
                f"capacity probe {clients}: p99 {probe['p99_ms']:.1f} ms, {probe['errors']} errors, "
                f"load generator {probe['generator_cpu_share']:.0%} and machine {probe['machine_cpu_share']:.0%} busy"
            )
            if not probe["passed"]:
                break
            best = clients
        # The best probe may not hold for the whole duration: step down until a level does.
        attempts = []
        for clients in reversed([probe["clients"] for probe in probes if probe["passed"]] if sustain_seconds else []):
            attempt = run(clients, sustain_seconds)
            attempt["passed"] = attempt["errors"] == 0 and attempt["p99_ms"] < 100
            attempts.append(attempt)
            log(f"capacity sustained {clients}: p99 {attempt['p99_ms']:.1f} ms, {attempt['errors']} errors")
            if attempt["passed"]:
                break
    tokens_path.unlink()
    held = next((attempt for attempt in attempts if attempt["passed"]), None)
    return {
        "worker_class": worker_class,
        "probes": probes,
        "best_probe": best,
        "sustained_attempts": attempts,
        "sustained": held,
    }


def worker_classes(*, scale, log_path):
    """The capacity row's probes under each of gunicorn's worker classes (WORKER_CLASSES),
    the same workers and clients, one class after the other: what picks the class."""
    seed(total=max(scale["capacity_levels"]) + 1, online=1, stale=0, several=0)  # the clients' users
    results = {}
    for worker_class in WORKER_CLASSES:
        log(f"worker class {worker_class}")
        results[worker_class] = capacity(
            levels=scale["capacity_levels"], probe_seconds=scale["capacity_probe_seconds"], sustain_seconds=0,
            workers=scale["gunicorn_workers"], log_path=log_path, worker_class=worker_class,
        )  # fmt: skip
    return results


# --- Report -----------------------------------------------------------------------------
def versions():
    import django
    import gunicorn as gunicorn_package
    import rest_framework

    pg = execute("SHOW server_version")[0][0]
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return {
        "cpu": f"{cpu} x {os.cpu_count()}",
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "django": django.get_version(),
        "drf": rest_framework.VERSION,
        "gunicorn": gunicorn_package.__version__,
        "postgresql": pg,
        "redis": redis_version,
        "wrk": wrk_version,
    }


LARGE_TABLE_ROWS = ("sweep", "admin_list", "feed")
ONLY_ROWS = (*LARGE_TABLE_ROWS, "throughput", "workers")


def large_table_rows(*, scale, only, log_path):
    """Rows 4, 5 and 6 (those named in `only`) on one table: the sweep's largest, which the
    sweep seeds (or this, without the sweep)."""
    results = {}
    if "sweep" in only:
        results["sweeps"] = []
        for total in scale["sweep_sizes"]:
            log(f"row 4: sweep at {total} users")
            results["sweeps"].append(
                sweep(
                    total=total,
                    online=scale["online"],
                    stale=scale["stale"],
                    several=scale["stale_of_several"],
                    trials=scale["sweep_trials"],
                )  # fmt: skip
            )
    else:
        log(f"seeding {scale['sweep_sizes'][-1]} users")
        seed(
            total=scale["sweep_sizes"][-1], online=scale["online"], stale=scale["stale"],
            several=scale["stale_of_several"],
        )  # fmt: skip
    load = {"workers": scale["gunicorn_workers"], "seconds": scale["load_seconds"], "rounds": scale["load_rounds"]}
    if "admin_list" in only:
        log("row 5: admin list")
        results["admin_list"] = admin_list(online=scale["online"], log_path=log_path, **load)
    if "feed" in only:
        log("row 6: change feed")
        results["payload"] = feed_poll(
            online=scale["online"], churn=scale["churn"], trials=scale["sweep_trials"], log_path=log_path, **load
        )
    execute("ALTER TABLE users RESET (autovacuum_enabled)")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny scale, to check that the benchmark runs")
    parser.add_argument("--output", type=Path, default=BENCH, help="where REPORT.md and results.json go")
    parser.add_argument("--render", action="store_true", help="only rewrite REPORT.md from results.json")
    parser.add_argument(
        "--only-history", action="store_true", help="only row 8 (history timeline), printed, REPORT.md untouched"
    )
    parser.add_argument(
        "--only",
        type=lambda value: value.split(","),
        metavar="ROWS",
        help=f"only these rows ({','.join(ONLY_ROWS)}: 4-6, and 1-2), printed as JSON (and written to "
        "only.json in --output); REPORT.md untouched",
    )
    parser.add_argument(
        "--runs", type=int, default=1, help="consecutive full runs; REPORT.md shows each row's median run and every run"
    )
    args = parser.parse_args()
    if args.only and not set(args.only) <= set(ONLY_ROWS):
        parser.error(f"--only takes some of {','.join(ONLY_ROWS)}")
    if args.render:
        results = json.loads((args.output / "results.json").read_text())
        (args.output / "REPORT.md").write_text(report(results))
        return
    if args.runs < 1:
        parser.error("--runs takes a whole number from 1")
    scale = QUICK if args.quick else FULL
    args.output.mkdir(parents=True, exist_ok=True)
    log_path = args.output / "gunicorn.log"
    log_path.unlink(missing_ok=True)

    recreate_database()
    setup_django()
    from django.conf import settings

    if args.only_history:
        print(json.dumps(history_timeline(users=scale["history_users"]), indent=2))
        return
    if args.only:
        results = {"mode": "quick" if args.quick else "full", "scale": scale, "machine": versions()}
        if set(args.only) & set(LARGE_TABLE_ROWS):
            results.update(large_table_rows(scale=scale, only=set(args.only), log_path=log_path))
        if "throughput" in args.only:
            if not set(args.only) & set(LARGE_TABLE_ROWS):
                seed(total=scale["token_users"] + 2, online=1, stale=0, several=0)  # the clients' users
            tokens_path = mint_tokens(user_ids=range(2, scale["token_users"] + 2), path=BENCH / ".tokens.txt")
            results["throughput"] = throughput(
                tokens_path=tokens_path, workers=scale["gunicorn_workers"], seconds=scale["load_seconds"],
                rounds=scale["load_rounds"], log_path=log_path,
            )  # fmt: skip
            tokens_path.unlink()
        if "workers" in args.only:
            results["worker_classes"] = worker_classes(scale=scale, log_path=log_path)
        output = json.dumps(results, indent=2, default=str)
        (args.output / "only.json").write_text(output)
        print(output)
        return

    runs = []
    for run in range(args.runs):
        if args.runs > 1:
            log(f"full run {run + 1} of {args.runs}")
        runs.append(full_run(scale=scale, settings=settings, log_path=log_path))
        # Written after each run: what finished is kept if a later run fails.
        results = runs[0] if len(runs) == 1 else {"runs": runs}
        (args.output / "results.json").write_text(json.dumps(results, indent=2, default=str))
        (args.output / "REPORT.md").write_text(report(json.loads(json.dumps(results, default=str))))
    log(f"wrote {args.output / 'REPORT.md'}")


def full_run(*, scale, settings, log_path):
    results = {"mode": "quick" if scale is QUICK else "full", "scale": scale, "machine": versions()}
    results["settings"] = {
        name: getattr(settings, name)
        for name in ("PRESENCE_HEARTBEAT_INTERVAL", "PRESENCE_WRITE_GRANULARITY", "PRESENCE_INACTIVITY_TIMEOUT")
    }
    log("row 3: writes per user-minute")
    results["writes"] = writes_per_user_minute()
    results.update(large_table_rows(scale=scale, only=LARGE_TABLE_ROWS, log_path=log_path))
    tokens_path = mint_tokens(user_ids=range(2, scale["token_users"] + 2), path=BENCH / ".tokens.txt")
    log("rows 1 and 2: throughput")
    results["throughput"] = throughput(
        tokens_path=tokens_path, workers=scale["gunicorn_workers"], seconds=scale["load_seconds"],
        rounds=scale["load_rounds"], log_path=log_path,
    )  # fmt: skip
    tokens_path.unlink()
    log("row 8: history timeline")
    execute("TRUNCATE presence_intervals")  # rows 4-6's; row 8's baseline is a table without any
    results["history"] = history_timeline(users=scale["history_users"])
    log("row 7: capacity")
    results["capacity"] = capacity(
        levels=scale["capacity_levels"], probe_seconds=scale["capacity_probe_seconds"],
        sustain_seconds=scale["capacity_sustain_seconds"], workers=scale["gunicorn_workers"], log_path=log_path,
    )  # fmt: skip
    results["finished_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return results


def report(r):
    from bench.report import render, render_runs

    return render_runs(r["runs"], GOALS) if "runs" in r else render(r, GOALS)


if __name__ == "__main__":
    main()
