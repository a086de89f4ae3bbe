"""Row 1's floor (heartbeat / no-op >= 0.85): what the heartbeat's write costs, measured.

1. Over HTTP: gunicorn servers that differ only in PRESENCE_WRITE_GRANULARITY, production's
   (the heartbeat interval less 5 s), one that never writes (longer than the run) and one that
   always writes (0), as every heartbeat of a client on its 30 s interval does, each driven by
   wrk in alternating rounds with the no-op behind the same authentication. Per round:
   requests per second, the rows PostgreSQL updated per request (pg_stat_user_tables) and the
   machine's CPU per request (/proc/stat, wrk included).
   Production's servers defer the write to a thread (PRESENCE_WRITE_BATCH_INTERVAL); the
   "in the request" servers write it before answering, as every server did before.
2. In process, one client: the write alone. `record_activity` that writes (one statement on two
   rows) against one that finds the rows fresh (no query), one that defers the write (the
   request's share, then with the flush that writes them all) and `touch_sessions` (the
   sockets' batched touch, one statement for many sessions) for the same sessions. For each: wall time
   per session and the PostgreSQL backend's own CPU per session (/proc/<backend pid>/stat).

    .venv/bin/python -m bench.heartbeat_floor --output DIR   # ~5 minutes; alone on the machine

Needs what bench/run needs (BENCH_DATABASE_URL is dropped and recreated). Writes DIR/heartbeat_floor.json.
"""

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench  # noqa: E402

# Each server's environment beside the benchmark's: only how often it writes. (Each write
# already commits without waiting for the disk: users.services.presence sets synchronous_commit
# off for its own statement, so a server with it off throughout measures the same.)
# Each write that changes no status is deferred by default (PRESENCE_WRITE_BATCH_INTERVAL, 1 s)
# and written by the worker's thread with the others of that second; "in the request" turns
# that off, as before it existed.
IN_THE_REQUEST = {"PRESENCE_WRITE_BATCH_INTERVAL": "0"}
SERVERS = {
    "production's (25 s)": {},
    "production's, in the request": IN_THE_REQUEST,
    "never writes": {"PRESENCE_WRITE_GRANULARITY": "1000000"},
    "always writes": {"PRESENCE_WRITE_GRANULARITY": "0"},
    "always writes, in the request": {"PRESENCE_WRITE_GRANULARITY": "0", **IN_THE_REQUEST},
}
TICKS = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds():
    """CPU seconds every core spent not idle, since boot."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / TICKS


def process_cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rows_updated():
    stats = bench.table_stats()
    return sum(table["updates"] for table in stats.values())


def stagger_clients(*, granularity=25):
    """The clients as a steady stream of them is: connected, each last written between now and
    `granularity` seconds ago, so production's server writes for 1/granularity of its clients
    each second from the round's start, as it does all day (bench.keep_clients_connected would
    make them all fresh, and it would write for none of them in a 12 s round)."""
    bench.execute(
        "UPDATE presence_sessions SET last_seen = now() - user_id %% %s * interval '1 second', "
        "last_active = now() - user_id %% %s * interval '1 second' "
        "WHERE user_agent = %s AND ended_at IS NULL AND revoked_at IS NULL",
        [granularity, granularity, bench.CLIENT_AGENT],
    )
    bench.execute(
        "UPDATE users SET last_seen = now() - id %% %s * interval '1 second', "
        "last_active = now() - id %% %s * interval '1 second' "
        "WHERE id IN (SELECT user_id FROM presence_sessions "
        "WHERE user_agent = %s AND ended_at IS NULL AND revoked_at IS NULL)",
        [granularity, granularity, bench.CLIENT_AGENT],
    )


def measured_round(url, *, tokens_path, seconds):
    bench.keep_clients_connected()  # present (a user offline would come back: a status change)
    stagger_clients()
    updated, busy = rows_updated(), machine_busy_seconds()
    result = bench.wrk(url, tokens=tokens_path, seconds=seconds, method="POST", body="{}")
    # The round's deferred writes land within the batch interval (1 s) after its last request:
    # their rows and CPU are the round's.
    time.sleep(2)
    busy = machine_busy_seconds() - busy
    result["rows_updated_per_request"] = (rows_updated() - updated) / result["requests"]
    result["machine_cpu_ms_per_request"] = busy * 1000 / result["requests"]
    return result


def over_http(*, tokens_path, seconds, rounds, log_path):
    runs = {name: [] for name in SERVERS}
    runs["no-op"] = []
    with contextlib.ExitStack() as stack:
        servers = {
            name: stack.enter_context(bench.gunicorn(workers=3, log_path=log_path, environment=environment))
            for name, environment in SERVERS.items()
        }
        for url in servers.values():  # each worker's connections open before the first round
            bench.wrk(f"{url}/api/users/heartbeat/", tokens=tokens_path, seconds=1, method="POST", body="{}")
        production = servers["production's (25 s)"]
        for round_number in range(rounds):
            runs["no-op"].append(measured_round(f"{production}/bench/noop/", tokens_path=tokens_path, seconds=seconds))
            for name, url in servers.items():
                runs[name].append(
                    measured_round(f"{url}/api/users/heartbeat/", tokens_path=tokens_path, seconds=seconds)
                )
            bench.log(f"heartbeat floor: round {round_number + 1} of {rounds}")
    noop_rps = bench.median_of(runs["no-op"], "rps")
    summary = {
        name: {
            "rps": bench.median_of(results, "rps"),
            "vs_noop": bench.median_of(results, "rps") / noop_rps,
            "rows_updated_per_request": bench.median_of(results, "rows_updated_per_request"),
            "machine_cpu_ms_per_request": bench.median_of(results, "machine_cpu_ms_per_request"),
        }
        for name, results in runs.items()
    }
    return {"rounds": runs, "summary": summary}


def in_process(*, sessions, repeats):
    """The write alone, from this process: per session, wall time and the backend's CPU."""
    from django.db import connection
    from django.test.utils import override_settings

    from users.models import PresenceSession
    from users.services import presence

    live = list(
        PresenceSession.objects.select_related("user")
        .filter(user_agent=bench.CLIENT_AGENT, ended_at__isnull=True, revoked_at__isnull=True)
        .order_by("user_id")[:sessions]
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]

    def timed(action):
        samples = []
        for _ in range(repeats):
            bench.keep_clients_connected()
            for session in live:  # the loaded copies as a request loads them
                session.refresh_from_db()
                session.user.refresh_from_db()
            wall, cpu = time.perf_counter(), process_cpu_seconds(backend)
            written = action()
            wall, cpu = time.perf_counter() - wall, process_cpu_seconds(backend) - cpu
            samples.append({"wall_us": wall * 1e6 / len(live), "backend_cpu_s": cpu, "written": written})
        # The backend's CPU is counted in clock ticks (10 ms): summed over every sample, not a
        # median of samples each shorter than a tick.
        backend_cpu = sum(sample["backend_cpu_s"] for sample in samples)
        return {
            "wall_us_per_session": statistics.median(sample["wall_us"] for sample in samples),
            "backend_cpu_us_per_session": backend_cpu * 1e6 / (len(live) * repeats),
            "written": samples[-1]["written"],
        }

    def heartbeat_each():
        return sum(
            presence.record_activity(user=session.user, session=session, active=False, reported_status="online")
            for session in live
        )

    def heartbeat_deferred_each():
        return sum(
            presence.record_activity(
                user=session.user, session=session, active=False, reported_status="online", may_defer=True
            )
            for session in live
        )

    def deferred_then_written():
        queued = heartbeat_deferred_each()
        presence.write_deferred_activity()
        return queued

    results = {}
    with override_settings(PRESENCE_WRITE_GRANULARITY=1_000_000, PRESENCE_WRITE_BATCH_INTERVAL=0):
        results["heartbeat, rows fresh (no write)"] = timed(heartbeat_each)
    with override_settings(PRESENCE_WRITE_GRANULARITY=0, PRESENCE_WRITE_BATCH_INTERVAL=0):
        results["heartbeat, one statement each"] = timed(heartbeat_each)
    # The thread would write after 59 s: these write (or leave queued) in this thread.
    with override_settings(PRESENCE_WRITE_GRANULARITY=0, PRESENCE_WRITE_BATCH_INTERVAL=59):
        results["heartbeat, deferred: queued only (the request's share)"] = timed(heartbeat_deferred_each)
        presence.write_deferred_activity()
        results["heartbeat, deferred: queued, then one flush for all"] = timed(deferred_then_written)
    results["touch_sessions, one statement for all"] = timed(
        lambda: presence.touch_sessions(session_ids=[session.pk for session in live])
    )
    return {"sessions": len(live), "repeats": repeats, "per_session": results}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=1_000_000, help="the table, as in the report's rows 1-2")
    parser.add_argument("--online", type=int, default=100_000)
    parser.add_argument("--token-users", type=int, default=2_000)
    parser.add_argument("--batch", type=int, default=1_000, help="sessions per in-process sample")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    bench.recreate_database()
    bench.setup_django()
    bench.seed(total=args.users, online=max(args.online, args.token_users + 1), stale=0)
    tokens_path = bench.mint_tokens(
        user_ids=range(2, args.token_users + 2), path=args.output / "heartbeat-floor-tokens.txt"
    )
    try:
        results = {
            "machine": bench.versions(),
            "http": over_http(
                tokens_path=tokens_path,
                seconds=args.seconds,
                rounds=args.rounds,
                log_path=args.output / "heartbeat-floor-gunicorn.log",
            ),  # fmt: skip
            "in_process": in_process(sessions=args.batch, repeats=9),
        }
    finally:
        tokens_path.unlink(missing_ok=True)
    output = json.dumps(results, indent=2, default=str)
    (args.output / "heartbeat_floor.json").write_text(output)
    print(output)


if __name__ == "__main__":
    main()
