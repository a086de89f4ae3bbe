"""The per-unit figures docs/scaling.md builds on, measured on this machine: how many rows a
second PostgreSQL takes from the sockets' batched session touch, how many one-statement
heartbeat writes a second it commits (pgbench running the statement the heartbeat runs), and
what one follower read of the change feed costs at 100,000 online users with 1% churn.

    bench/run --scaling            # prints JSON; docs/scaling.md quotes a run of it

Baselines from the same run: `SELECT 1` transactions a second through pgbench (what the
database and pgbench cost with no work), and a touch of 1,000 sessions (per-statement cost).
The database (BENCH_DATABASE_URL, default .../offchat_bench_scaling) is dropped and recreated.
"""

import os
import re
import statistics
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path

os.environ.setdefault("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/offchat_bench_scaling")

from bench import bench  # noqa: E402  (reads BENCH_DATABASE_URL when imported)

ONLINE = 100_000
TOTAL = 200_000
PGBENCH_SECONDS = 15
PGBENCH_CLIENTS = 8


def touch_rates(*, batch_sizes=(1_000, 10_000, 50_000), trials=5) -> dict:
    """touch_sessions over `n` live sessions, as one process's sockets are touched every
    PRESENCE_WRITE_GRANULARITY: session rows (and as many user rows) a second."""
    from django.utils import timezone

    from users.models import PresenceSession
    from users.services import presence

    ids = list(PresenceSession.objects.filter(user_id__lte=max(batch_sizes)).values_list("pk", flat=True))
    rates = {}
    for size in batch_sizes:
        timings = []
        for trial in range(trials):
            at = timezone.now() + timedelta(seconds=trial)
            started = time.perf_counter()
            touched = presence.touch_sessions(session_ids=ids[:size], at=at)
            timings.append(time.perf_counter() - started)
            assert touched == size, (touched, size)
        median = statistics.median(timings)
        rates[size] = {"median_ms": median * 1000, "session_rows_per_s": size / median}
    return rates


def heartbeat_writes_per_second() -> dict:
    """pgbench, PGBENCH_CLIENTS connections, each transaction the fast path's one statement
    (users.services.presence) for a random online user, as a heartbeat that writes runs it;
    baseline: `SELECT 1`. The statement's parameters are bound from the same functions."""
    from django.utils import timezone

    from users.presence_rules import shows_the_same_after_activity_params
    from users.services.presence import _fast_path_statement

    bench.execute("DROP TABLE IF EXISTS bench_sessions")
    bench.execute(
        "CREATE TABLE bench_sessions AS SELECT row_number() OVER (ORDER BY user_id) AS n, id, user_id "
        "FROM presence_sessions WHERE user_id <= %s",
        [ONLINE],
    )
    bench.execute("CREATE UNIQUE INDEX ON bench_sessions (n)")
    bench.execute("ANALYZE bench_sessions")
    # The thresholds are moments relative to `at`: pgbench gets them as SQL around now().
    now = timezone.now()
    params = shows_the_same_after_activity_params(reported_status="online", active=True, at=now)
    sql = _fast_path_statement(active=True, keeps_report=False)
    bound = {
        "session_id": ":sid",
        "user_id": ":uid",
        "at": "now()",
        "reported_status": "'online'",
        "absorbing_statuses": "ARRAY[" + ",".join(f"'{status}'" for status in params["absorbing_statuses"]) + "]",
        "connected_after": f"now() - interval '{(now - params['connected_after']).total_seconds()} seconds'",
        "away_status": f"'{params['away_status']}'",
        "active_after": f"now() - interval '{(now - params['active_after']).total_seconds()} seconds'",
    }
    statement = re.sub(r"%\((\w+)\)s", lambda name: bound[name[1]], sql)
    lookup = f"\\set n random(1, {ONLINE})\nSELECT id AS sid, user_id AS uid FROM bench_sessions WHERE n = :n \\gset\n"
    write = lookup + " ".join(statement.split()) + ";\n"
    results = {}
    for name, script in [("select_1", "SELECT 1;\n"), ("lookup_only", lookup), ("heartbeat_write", write)]:
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as file:
            file.write(script)
        url = bench.DATABASE_URL
        command = ["pgbench", "-n", "-M", "prepared", "-c", str(PGBENCH_CLIENTS), "-j", "2"]
        command += ["-T", str(PGBENCH_SECONDS), "-f", file.name, url]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        Path(file.name).unlink()
        results[name] = float(re.search(r"tps = ([\d.]+)", output)[1])
    results["updated_rows_per_write"] = 2
    return results


def feed_follower_read(*, churn_share=0.01, trials=9) -> dict:
    """One read of the change feed as each ASGI process's follower does once per
    PRESENCE_PUSH_INTERVAL, after `churn_share` of the online users changed."""
    from django.utils import timezone

    from users.models import User
    from users.realtime.hub import FOLLOWER_MAX_CHANGES
    from users.selectors import accounts, feed
    from users.services import presence

    bench.refresh_online(online=ONLINE)  # recent activity: only the churn changes, not the clock
    cursor = feed.current_cursor(now=timezone.now())
    changed = list(range(2, 2 + int(ONLINE * churn_share)))
    for user in User.objects.filter(pk__in=changed):
        presence.set_manual_status(user=user, status="away")
    timings = []
    for _ in range(trials):
        started = time.perf_counter()
        changes = feed.changes_since(
            queryset=accounts.users_for_admin(), cursor=cursor, now=timezone.now(), limit=FOLLOWER_MAX_CHANGES
        )
        timings.append((time.perf_counter() - started) * 1000)
    return {"changed_users": len(changes.users), "median_ms": statistics.median(timings)}


def main():
    import json

    bench.recreate_database()
    bench.setup_django()
    bench.log(f"seeding {TOTAL:,} users, {ONLINE:,} online")
    bench.seed(total=TOTAL, online=ONLINE, stale=0)
    results = {"machine": bench.versions(), "online": ONLINE, "total": TOTAL}
    bench.log("batched touch")
    results["touch"] = touch_rates()
    bench.log("heartbeat writes (pgbench)")
    results["heartbeat_writes"] = heartbeat_writes_per_second()
    bench.log("feed follower read")
    results["feed_follower"] = feed_follower_read()
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
