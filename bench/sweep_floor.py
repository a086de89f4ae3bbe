"""Row 4's floor (the sweep at 1,000,000 users <= 250 ms): what its writes cost, measured.

On row 4's table (1,000,000 users, 100,000 online, 10,000 silent past the timeout, 1,000 of
them on one of their 2-3 sessions only), in alternating trials:

1. The sweep as it runs (committed, as beat runs it), each statement's own time.
2. The same rows written by the barest statements that can address them (ranges of primary
   and foreign keys, constant values, no reads, no Python): the 10,000 idle sessions ended,
   the 9,000 wholly silent users' intervals closed and the users set offline with a feed id.
   Each trial in a transaction that is rolled back (every trial starts from bench.reset_sweep,
   which vacuums).
3. Those bare writes again without the three `users` indexes that a status change moves
   (present status, present username, feed id), dropped inside the rolled-back transaction.
4. And without any index but the primary keys on the three tables.

So the floor is read off the same run: what writing these rows costs at all (2), what of it
is the indexes' upkeep (3, 4), and what the sweep adds to it (1 less 2).

    .venv/bin/python -m bench.sweep_floor --output DIR   # ~1 minute; alone on the machine

Needs what bench/run needs (BENCH_DATABASE_URL is dropped and recreated). Writes DIR/sweep_floor.json.
"""

import argparse
import json
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench  # noqa: E402

# The users indexes whose key a status change moves (users/models.py, User.Meta.indexes).
STATUS_INDEXES = ["users_present_status_idx", "users_present_username_idx", "users_presence_update_idx"]
TABLES = ["users", "presence_sessions", "presence_intervals"]


def bare_writes(*, first, last_wholly, last, now, cutoff):
    """The sweep's three writes over the same rows, each the barest statement for them; the
    milliseconds of each."""
    statements = {
        "sessions ended": (
            "UPDATE presence_sessions SET ended_at = %(now)s, end_reason = 'idle' "
            "WHERE user_id BETWEEN %(first)s AND %(last)s AND ended_at IS NULL AND last_seen < %(cutoff)s"
        ),
        "intervals closed": (
            "UPDATE presence_intervals SET ended_at = %(cutoff)s "
            "WHERE user_id BETWEEN %(first)s AND %(last_wholly)s AND ended_at IS NULL"
        ),
        "users offline": (
            "UPDATE users SET online_status = 'offline', presence_update_id = 1 "
            "WHERE id BETWEEN %(first)s AND %(last_wholly)s"
        ),
    }
    params = {"first": first, "last_wholly": last_wholly, "last": last, "now": now, "cutoff": cutoff}
    timings = {}
    for name, sql in statements.items():
        started = time.perf_counter()
        bench.execute(sql, params)
        timings[name] = (time.perf_counter() - started) * 1000
    timings["total"] = sum(timings.values())
    return timings


def drop_status_indexes():
    for name in STATUS_INDEXES:
        bench.execute(f'DROP INDEX "{name}"')


def drop_secondary_indexes():
    """Every index but the primary keys on the three tables (constraints first: their index
    goes with them)."""
    constraints = bench.execute(
        "SELECT conrelid::regclass::text, conname FROM pg_constraint "
        "WHERE conrelid::regclass::text = ANY(%s) AND contype = 'u'",
        [TABLES],
    )
    for table, name in constraints:
        bench.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
    indexes = bench.execute(
        "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid::regclass::text = ANY(%s) AND NOT indisprimary",
        [TABLES],
    )
    for (name,) in indexes:
        bench.execute(f'DROP INDEX "{name}"')


def rolled_back(action):
    from django.db import transaction

    with transaction.atomic():
        result = action()
        transaction.set_rollback(True)
    return result  # its dead rows go with the next trial's reset_sweep, which vacuums


def the_sweep(*, now, expected_offline):
    """One committed sweep; its statements' times, in the order they ran."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from users.services import presence

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        marked = presence.mark_inactive_users_offline(now=now)
        total = (time.perf_counter() - started) * 1000
    assert marked == expected_offline, (marked, expected_offline)  # a sweep that did its work
    statements = [{"sql": query["sql"][:100], "ms": float(query["time"]) * 1000} for query in queries]
    return {"total": total, "statements": statements}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--online", type=int, default=100_000)
    parser.add_argument("--stale", type=int, default=10_000)
    parser.add_argument("--several", type=int, default=1_000)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    bench.recreate_database()
    bench.setup_django()
    from users.presence_rules import inactivity_timeout

    seeded_at, _ = bench.seed(total=args.users, online=args.online, stale=args.stale, several=args.several)
    first, last = args.online + 1, args.online + args.stale
    last_wholly = last - args.several
    now = seeded_at + timedelta(seconds=1)
    cutoff = now - inactivity_timeout()
    writes = {"first": first, "last_wholly": last_wholly, "last": last, "now": now, "cutoff": cutoff}

    def without(drop):
        def action():
            drop()
            return bare_writes(**writes)

        return action

    variants = {
        "the sweep": lambda: the_sweep(now=now, expected_offline=last_wholly - first + 1),
        "bare writes": lambda: rolled_back(lambda: bare_writes(**writes)),
        "bare writes, no status-moved users index": lambda: rolled_back(without(drop_status_indexes)),
        "bare writes, primary keys only": lambda: rolled_back(without(drop_secondary_indexes)),
    }
    trials = {name: [] for name in variants}
    for trial in range(args.trials):
        for name, run in variants.items():
            bench.reset_sweep(first=first, last=last, now=now)
            trials[name].append(run())
        bench.log(f"sweep floor: trial {trial + 1} of {args.trials}")

    sweeps = trials["the sweep"]
    by_statement = [
        {"sql": statement["sql"], "median_ms": statistics.median(sweep["statements"][index]["ms"] for sweep in sweeps)}
        for index, statement in enumerate(sweeps[0]["statements"])
        if all(len(sweep["statements"]) == len(sweeps[0]["statements"]) for sweep in sweeps)
    ]
    summary = {"the sweep": {"total": statistics.median(sweep["total"] for sweep in sweeps)}}
    for name in list(variants)[1:]:
        summary[name] = {part: statistics.median(result[part] for result in trials[name]) for part in trials[name][0]}
    results = {
        "machine": bench.versions(),
        "table": {"users": args.users, "online": args.online, "stale": args.stale, "stale_of_several": args.several},
        "summary_ms": summary,
        "sweep_statements_by_time": sorted(by_statement, key=lambda row: -row["median_ms"]),
        "trials": trials,
    }
    output = json.dumps(results, indent=2, default=str)
    (args.output / "sweep_floor.json").write_text(output)
    print(output)


if __name__ == "__main__":
    main()
