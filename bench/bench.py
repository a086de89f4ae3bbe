"""OffChat presence benchmark: real gunicorn, PostgreSQL and Redis, load from other processes
(wrk with bench/wrk.lua, bench/load.py). Writes REPORT.md and results.json.

    bench/run                     # the full run (100k and 1M users, ~20 min): bench/REPORT.md
    bench/run --quick --output D  # a tiny scale in ~1 min, so that CI keeps the benchmark working

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

FULL = {
    "sweep_sizes": [100_000, 1_000_000],
    "online": 10_000,
    "stale": 1_000,
    "sweep_trials": 7,
    "load_seconds": 12,
    "load_rounds": 3,
    "token_users": 2_000,
    "payload_users": 10_000,
    "capacity_levels": [2_500, 5_000, 7_500, 10_000, 12_500, 15_000],
    "history_users": 1_000_000,
    "capacity_probe_seconds": 45,
    "capacity_sustain_seconds": 180,
    "gunicorn_workers": 3,
}
QUICK = {
    "sweep_sizes": [2_000, 5_000],
    "online": 200,
    "stale": 20,
    "sweep_trials": 3,
    "load_seconds": 2,
    "load_rounds": 1,
    "token_users": 100,
    "payload_users": 1_000,
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
    "admin_list_p50_ms": 25,
    "feed_vs_full": 0.05,
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


def seed(*, total, online, stale):
    """`total` users: ids 1..online online (id 1 is staff), the next `stale` online but silent
    for an hour, the rest offline; a live session for each online and stale user. COPY, not
    the ORM."""
    from django.contrib.auth.hashers import make_password
    from django.utils import timezone

    execute(
        "TRUNCATE users, presence_sessions, presence_tombstones, online_users_onlineuseractivity, "
        "token_blacklist_outstandingtoken, token_blacklist_blacklistedtoken RESTART IDENTITY CASCADE"
    )
    now = timezone.now()
    password = make_password("bench-password")
    hour_ago = now - timedelta(hours=1)

    def users():
        for user_id in range(1, total + 1):
            if user_id <= online:
                status, seen = "online", now - timedelta(seconds=user_id % 20)
            elif user_id <= online + stale:
                status, seen = "online", hour_ago
            else:
                status, seen = "offline", now - timedelta(days=1 + user_id % 30)
            staff = user_id == 1
            yield [
                user_id, password, staff, f"user{user_id:07d}", "Bench", f"User {user_id}",
                f"user{user_id}@example.com", staff, True, now.isoformat(), status, seen.isoformat(),
                seen.isoformat(), True, 0,
            ]  # fmt: skip

    def sessions():
        for user_id in range(1, online + stale + 1):
            seen = (now - timedelta(seconds=user_id % 20) if user_id <= online else hour_ago).isoformat()
            yield [uuid.uuid4(), user_id, "bench", seen, seen, seen, "online", ""]

    started = time.perf_counter()
    copy_rows("users", USER_COLUMNS, users())
    copy_rows("presence_sessions", SESSION_COLUMNS, sessions())
    execute("SELECT setval(pg_get_serial_sequence('users', 'id'), %s)", [total])
    execute("VACUUM ANALYZE users")
    execute("VACUUM ANALYZE presence_sessions")
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
        ([sid, uid, "bench", now, now, now, "online", ""] for sid, uid in zip(session_ids, user_ids, strict=True)),
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


def free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def gunicorn(*, workers, middleware=True, throttles=False, log_path):
    import urllib.error
    import urllib.request

    port = free_port()
    env = {
        **os.environ,
        "BENCH_PRESENCE_MIDDLEWARE": "1" if middleware else "0",
        "BENCH_THROTTLES": "1" if throttles else "0",
    }
    command = [
        str(VENV_BIN / "gunicorn"), "offchat_backend.wsgi:application", f"--bind=127.0.0.1:{port}",
        f"--workers={workers}", "--backlog=2048", "--timeout=60",
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
    30 s and one other request every second. Counts the statements that wrote rows."""
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
            if sql.lstrip().split(" ", 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}:
                rows = max(context["cursor"].rowcount, 0)
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

    ours = simulate()
    with override_settings(PRESENCE_WRITE_GRANULARITY=0):
        naive = simulate()
    # What django-online-users' middleware writes when it sees the user: an upsert per
    # request. (As shipped it reads request.user before DRF authenticates the JWT, so for a
    # JWT client it sees an anonymous user and records nothing at all.)
    package = simulate(after_request=lambda user: OnlineUserActivity.update_user_activity(user))
    package = {key: package[key] - ours[key] for key in ours}
    return {"ours": ours, "naive_write_per_request": naive, "django_online_users": package}


def poll_payload(*, users):
    """Row 6, in process: an admin poll after 1% of `users` changed, change feed vs the full list."""
    from rest_framework.test import APIClient

    from users.models import PresenceSession, SessionEndReason, User
    from users.services import auth, presence

    seed(total=users, online=users // 10, stale=0)
    staff = User.objects.get(pk=1)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {auth.log_in(user=staff).access}")

    def full_list():
        total, page, cursor = 0, 1, None
        while True:
            response = client.get("/api/users/admin/users/", {"page": page, "page_size": 200})
            total += len(response.content)
            body = response.json()
            cursor = cursor or body["cursor"]
            if not body["next"]:
                return total, cursor
            page += 1

    full_bytes, cursor = full_list()
    churn = users // 100
    leaving = PresenceSession.objects.filter(user_id__gt=1, ended_at__isnull=True)[: churn // 2]
    for session in leaving:
        presence.end_session(session=session, reason=SessionEndReason.LOGOUT)
    for user in User.objects.filter(online_status="offline").order_by("-id")[: churn - churn // 2]:
        presence.start_session(user=user)
    feed = client.get("/api/users/admin/users/", {"since": cursor})
    changed = len(feed.json()["results"])
    assert changed >= churn, (changed, churn)
    return {
        "users": users,
        "changed": churn,
        "feed_results": changed,
        "full_list_bytes": full_bytes,
        "feed_bytes": len(feed.content),
        "ratio": len(feed.content) / full_bytes,
    }


def sweep(*, total, online, stale, trials):
    """Row 4, in process: the sweep over `total` users of which `online` are online and
    `stale` have been silent past the timeout. Median of `trials`, and its query plans."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from users.services import presence

    seeded_at, seed_seconds = seed(total=total, online=online, stale=stale)
    first, last = online + 1, online + stale
    now = seeded_at + timedelta(seconds=1)
    timings = []
    for _ in range(trials):
        execute("UPDATE users SET online_status = 'online' WHERE id BETWEEN %s AND %s", [first, last])
        execute(
            "UPDATE presence_sessions SET ended_at = NULL, end_reason = '' WHERE user_id BETWEEN %s AND %s",
            [first, last],
        )
        started = time.perf_counter()
        marked = presence.mark_inactive_users_offline(now=now)
        timings.append((time.perf_counter() - started) * 1000)
        assert marked == stale, (marked, stale)

    execute("UPDATE users SET online_status = 'online' WHERE id BETWEEN %s AND %s", [first, last])
    execute(
        "UPDATE presence_sessions SET ended_at = NULL, end_reason = '' WHERE user_id BETWEEN %s AND %s", [first, last]
    )
    plans = []
    with transaction.atomic():
        with CaptureQueriesContext(connection) as queries:
            presence.mark_inactive_users_offline(now=now)
        transaction.set_rollback(True)
    with transaction.atomic():
        for query in queries:
            sql = query["sql"]
            if sql.startswith("SELECT") and ("users" in sql or "presence_sessions" in sql):
                plan = "\n".join(row[0] for row in execute("EXPLAIN (ANALYZE, BUFFERS) " + sql))
                plans.append({"sql": sql[:160], "plan": plan, "seq_scan_on_users": "Seq Scan on users" in plan})
        transaction.set_rollback(True)
    return {
        "users": total,
        "seed_seconds": seed_seconds,
        "median_ms": statistics.median(timings),
        "trials_ms": timings,
        "plans": plans,
    }


def history_timeline(*, users, days=7, trials=21):
    """Row 8, in process: a 7-day timeline at one-minute steps (the admin chart's longest
    read: the query, the points and the JSON body the endpoint answers), over a week of
    `users` users' history seeded with COPY (an online and an away interval a day each) and
    a count for every minute of the week. Baseline, same run: the same read before any
    interval exists. Also one user's week (per-day totals)."""
    from zoneinfo import ZoneInfo

    from django.utils import timezone
    from rest_framework.renderers import JSONRenderer

    from users.api.serializers.history import timeline_points
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

    def read(trials):
        """What the endpoint does: the query, the points, and the JSON body."""
        timings = []
        for _ in range(trials):
            started = time.perf_counter()
            points = history.timeline(start=start, end=now, step=timedelta(minutes=1))
            body = JSONRenderer().render({"points": timeline_points(points)})
            timings.append((time.perf_counter() - started) * 1000)
        assert len(points) == minutes and body, len(points)
        return timings

    baseline = read(trials)
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
    loaded = read(trials)
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
        "baseline_p50_ms": statistics.median(baseline),
        "ratio": statistics.median(loaded) / statistics.median(baseline),
        "user_week_p50_ms": statistics.median(user_timings),
        "user_week_days": len(week.days),
    }


def admin_list(*, online, tokens_path, workers, seconds, log_path):
    """Row 5: the online filter through gunicorn (wrk), and queries per request in process."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from rest_framework.test import APIClient

    from users.models import User
    from users.services import auth

    refresh_online(online=online)
    client = APIClient()
    staff_token = auth.log_in(user=User.objects.get(pk=1)).access
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {staff_token}")
    queries = {}
    for label, params in {
        "online, 10 rows": {"online_status": "online", "page_size": 10},
        "online, 50 rows": {"online_status": "online", "page_size": 50},
        "online, 200 rows": {"online_status": "online", "page_size": 200},
        "all, 50 rows": {"page_size": 50},
    }.items():
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            assert client.get("/api/users/admin/users/", params).status_code == 200
            elapsed = (time.perf_counter() - started) * 1000
        queries[label] = {"queries": len(captured), "in_process_ms": elapsed}
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
    with gunicorn(workers=workers, log_path=log_path) as url:
        runs = [
            # Fewer connections than workers: the latency of a request, not of a queue.
            wrk(
                f"{url}/api/users/admin/users/?online_status=online",
                tokens=staff_tokens,
                seconds=seconds,
                connections=workers - 1,
                threads=1,
            )
        ]
    staff_tokens.unlink()
    return {
        "wrk": runs[0],
        "queries": queries,
        "deepest_page": deep,
        "deepest_page_ms": deep_ms,
        "keyset_deepest_page_ms": keyset_deep_ms,
    }


def throughput(*, tokens_path, workers, seconds, rounds, log_path):
    """Rows 1 and 2: heartbeat vs a no-op with the same authentication, and an ordinary read
    with the presence middleware on vs off. Alternating rounds; medians."""
    before = table_stats()
    heartbeat, noop, stock_noop = [], [], []
    with gunicorn(workers=workers, log_path=log_path) as url:
        wrk(f"{url}/bench/noop/", tokens=tokens_path, seconds=1)  # warm up connections and caches
        for _ in range(rounds):
            noop.append(wrk(f"{url}/bench/noop/", tokens=tokens_path, seconds=seconds, method="POST", body="{}"))
            heartbeat.append(
                wrk(f"{url}/api/users/heartbeat/", tokens=tokens_path, seconds=seconds, method="POST", body="{}")
            )
            stock_noop.append(
                wrk(f"{url}/bench/noop-stock-jwt/", tokens=tokens_path, seconds=seconds, method="POST", body="{}")
            )
    after_heartbeats = table_stats()
    middleware = {True: [], False: []}
    for _ in range(rounds):
        for enabled in (True, False):
            with gunicorn(workers=workers, middleware=enabled, log_path=log_path) as url:
                wrk(f"{url}/api/users/me/", tokens=tokens_path, seconds=1)
                middleware[enabled].append(wrk(f"{url}/api/users/me/", tokens=tokens_path, seconds=seconds))
    # What production's throttles (counters in Redis) add to the heartbeat, which the rows above
    # measure without them.
    throttled = {True: [], False: []}
    for _ in range(rounds):
        for enabled in (True, False):
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


def capacity(*, levels, probe_seconds, sustain_seconds, workers, log_path):
    """Row 7: the most clients (30 s heartbeats, a read a minute) held with p99 < 100 ms and
    no errors: a probe per level, then the best level sustained."""
    tokens_path = BENCH / ".capacity-tokens.txt"
    mint_tokens(user_ids=range(1, max(levels) + 1), path=tokens_path)
    probes, best = [], None
    with gunicorn(workers=workers, log_path=log_path) as url:

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
            log(f"capacity probe {clients}: p99 {probe['p99_ms']:.1f} ms, {probe['errors']} errors")
            if not probe["passed"]:
                break
            best = clients
        # The best probe may not hold for the whole duration: step down until a level does.
        attempts = []
        for clients in reversed([probe["clients"] for probe in probes if probe["passed"]]):
            attempt = run(clients, sustain_seconds)
            attempt["passed"] = attempt["errors"] == 0 and attempt["p99_ms"] < 100
            attempts.append(attempt)
            log(f"capacity sustained {clients}: p99 {attempt['p99_ms']:.1f} ms, {attempt['errors']} errors")
            if attempt["passed"]:
                break
    tokens_path.unlink()
    held = next((attempt for attempt in attempts if attempt["passed"]), None)
    return {"probes": probes, "best_probe": best, "sustained_attempts": attempts, "sustained": held}


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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny scale, to check that the benchmark runs")
    parser.add_argument("--output", type=Path, default=BENCH, help="where REPORT.md and results.json go")
    parser.add_argument("--render", action="store_true", help="only rewrite REPORT.md from results.json")
    parser.add_argument(
        "--only-history", action="store_true", help="only row 8 (history timeline), printed, REPORT.md untouched"
    )
    args = parser.parse_args()
    if args.render:
        results = json.loads((args.output / "results.json").read_text())
        (args.output / "REPORT.md").write_text(report(results))
        return
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

    results = {"mode": "quick" if args.quick else "full", "scale": scale, "machine": versions()}
    results["settings"] = {
        name: getattr(settings, name)
        for name in ("PRESENCE_HEARTBEAT_INTERVAL", "PRESENCE_WRITE_GRANULARITY", "PRESENCE_INACTIVITY_TIMEOUT")
    }
    log("row 3: writes per user-minute")
    results["writes"] = writes_per_user_minute()
    log("row 6: poll payload")
    results["payload"] = poll_payload(users=scale["payload_users"])
    results["sweeps"] = []
    for total in scale["sweep_sizes"]:
        log(f"row 4: sweep at {total} users")
        results["sweeps"].append(
            sweep(total=total, online=scale["online"], stale=scale["stale"], trials=scale["sweep_trials"])
        )
    log("row 5: admin list")
    tokens_path = mint_tokens(user_ids=range(2, scale["token_users"] + 2), path=BENCH / ".tokens.txt")
    results["admin_list"] = admin_list(
        online=scale["online"], tokens_path=tokens_path, workers=scale["gunicorn_workers"],
        seconds=scale["load_seconds"], log_path=log_path,
    )  # fmt: skip
    log("rows 1 and 2: throughput")
    results["throughput"] = throughput(
        tokens_path=tokens_path, workers=scale["gunicorn_workers"], seconds=scale["load_seconds"],
        rounds=scale["load_rounds"], log_path=log_path,
    )  # fmt: skip
    tokens_path.unlink()
    log("row 8: history timeline")
    results["history"] = history_timeline(users=scale["history_users"])
    log("row 7: capacity")
    results["capacity"] = capacity(
        levels=scale["capacity_levels"], probe_seconds=scale["capacity_probe_seconds"],
        sustain_seconds=scale["capacity_sustain_seconds"], workers=scale["gunicorn_workers"], log_path=log_path,
    )  # fmt: skip
    results["finished_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (args.output / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (args.output / "REPORT.md").write_text(report(results))
    log(f"wrote {args.output / 'REPORT.md'}")


def report(r):
    from bench.report import render

    return render(r, GOALS)


if __name__ == "__main__":
    main()
