"""py-spy profiles of the HTTP rows that miss their goal, for the report's reading: gunicorn's
workers sampled while wrk drives one request (the heartbeat, with and without production's
throttles, and the no-op behind the same authentication), then the admin list and the change
feed poll over 1,000,000 users with 100,000 online. Prints, per request, the share of samples
in each of our modules and in each library, and the heaviest frames of our own code.

    bench/run --profile   # ~4 minutes; needs PostgreSQL, Redis, wrk and py-spy (bench/requirements.txt)
    bench/run --profile --users 20000 --online 2000 --seconds 4   # a small check that it runs

Shares are of the workers' CPU samples (all 3 workers; a worker waiting is not sampled), so they
add up to 100% per request; what one request costs in milliseconds is in bench/REPORT.md.
"""

import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench  # noqa: E402

WORKERS = 3


def main():
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--online", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=15, help="per request profiled")
    args = parser.parse_args()
    bench.recreate_database()
    bench.setup_django()
    from users.models import User
    from users.selectors import feed
    from users.services import auth

    online = args.online
    bench.seed(total=args.users, online=online, stale=0)
    bench.make_statistics_stale(online=online)
    # Clients' tokens: users the churn leaves alone (it signs out the last 0.5% of the online).
    token_users = min(2_000, online - online // 200 - 1)
    tokens_path = bench.mint_tokens(user_ids=range(2, token_users + 2), path=bench.BENCH / ".profile-tokens.txt")
    staff_path = bench.BENCH / ".profile-staff-token.txt"
    staff_path.write_text(auth.log_in(user=User.objects.get(pk=1)).access + "\n")
    results = {}
    try:
        with bench.gunicorn(workers=WORKERS, log_path=Path(tempfile.gettempdir()) / "profile-gunicorn.log") as url:
            cursor = str(feed.current_cursor(now=_now()))
            _churn(online=online)  # 1% of the online users change after the cursor: the feed's answer
            targets = {
                "no-op (same authentication)": (f"{url}/bench/noop/", tokens_path, "POST"),
                "heartbeat": (f"{url}/api/users/heartbeat/", tokens_path, "POST"),
                "admin list, online, 50 rows": (
                    f"{url}/api/users/admin/users/?online_status=online&page_size=50",
                    staff_path,
                    "GET",
                ),
                "change feed poll, 1% churn": (
                    f"{url}/api/users/admin/users/?online_status=online&since={quote(cursor)}",
                    staff_path,
                    "GET",
                ),
            }
            for name, (target, tokens, method) in targets.items():
                bench.heartbeat(online=online)
                results[name] = _profile(target, tokens=tokens, method=method, seconds=args.seconds)
                bench.log(f"profiled {name}")
        with bench.gunicorn(workers=WORKERS, throttles=True, log_path=Path(tempfile.gettempdir()) / "pg.log") as url:
            results["heartbeat, production's throttles"] = _profile(
                f"{url}/api/users/heartbeat/", tokens=tokens_path, method="POST", seconds=args.seconds
            )
    finally:
        tokens_path.unlink(missing_ok=True)
        staff_path.unlink(missing_ok=True)
    results["sweep"] = _profile_sweep(total=args.users, online=online)
    print(json.dumps(results, indent=1))


def _profile_sweep(*, total, online, trials=7):
    """Row 4's sweep (10% of the online users stale, a tenth of those on one of several
    sessions), in this process, sampled with its waits (--idle): the share of a sweep spent
    waiting for PostgreSQL's answers against the share in Python."""
    import os
    from datetime import timedelta

    from users.services import presence

    stale = online // 10
    seeded_at, _ = bench.seed(total=total, online=online, stale=stale, several=stale // 10)
    first, last = online + 1, online + stale
    now = seeded_at + timedelta(seconds=1)
    with tempfile.TemporaryDirectory() as work:
        raw = Path(work) / "sweep.txt"
        spy = _py_spy(pid=os.getpid(), output=raw, flags=["--idle", "--rate", "500"])
        time.sleep(1)
        timings = []
        for _ in range(trials):
            bench.reset_sweep(first=first, last=last, now=now)
            started = time.perf_counter()
            presence.mark_inactive_users_offline(now=now)
            timings.append(round((time.perf_counter() - started) * 1000, 1))
        spy.send_signal(2)  # py-spy writes its output on SIGINT
        spy.wait(timeout=60)
        sweeping = [
            (frames, count) for frames, count in _read(raw) if any("mark_inactive_users_offline" in f for f in frames)
        ]
    total_samples = sum(count for _, count in sweeping)
    statements = collections.Counter()
    for frames, count in sweeping:
        ours = [frame for frame in frames if _path(frame).startswith("users/services/")]
        # The leaf is Django's cursor wrapper while psycopg2 (C, no frame of its own) waits.
        waiting = "django/db/backends/utils.py" in frames[-1]
        place = "waiting for PostgreSQL in " if waiting else "Python in "
        statements[place + (ours[-1] if ours else "?")] += count
    return {
        "trials_ms": timings,
        "samples": total_samples,
        "by_place": {place: round(count / max(total_samples, 1), 3) for place, count in statements.most_common(14)},
    }


def _now():
    from django.utils import timezone

    return timezone.now()


def _churn(*, online):
    """1% of the online users go, as many come (row 6's churn), through the presence services.
    Those who go are the last online ones: the first hold the profile's tokens (id 1, staff,
    the admin's), and a logout would revoke them."""
    from users.models import PresenceSession, SessionEndReason, User
    from users.services import presence

    leaving = PresenceSession.objects.filter(user_id__gt=online - online // 200, user_id__lte=online)
    for session in leaving.filter(ended_at__isnull=True):
        presence.end_session(session=session, reason=SessionEndReason.LOGOUT)
    for user in User.objects.filter(pk__gt=online, pk__lte=online + online // 200):
        presence.start_session(user=user)


def _profile(url, *, tokens, method, seconds):
    # gunicorn's master: the oldest of its processes (pgrep -o); --subprocesses takes the workers.
    found = subprocess.run(["pgrep", "-o", "-f", "gunicorn offchat_backend.wsgi"], capture_output=True, text=True)
    master = int(found.stdout.split()[0])
    with tempfile.TemporaryDirectory() as work:
        raw = Path(work) / "profile.txt"
        spy = _py_spy(
            pid=master, output=raw, flags=["--subprocesses", "--rate", "200", "--duration", str(round(seconds))]
        )
        time.sleep(1)
        body = "{}" if method == "POST" else None
        load = bench.wrk(url, tokens=tokens, seconds=max(1, round(seconds - 2)), method=method, body=body)
        spy.wait(timeout=60)
        stacks = _read(raw)
    if load["errors"]:
        raise RuntimeError(f"{load['errors']} requests failed under the profile's load: {url}")
    return {"wrk": {key: load[key] for key in ("rps", "p50_ms", "p99_ms", "errors")}, **_summary(stacks)}


def _py_spy(*, pid, output, flags):
    """py-spy recording `pid` into `output` (raw, collapsed stacks) until its --duration or SIGINT."""
    return subprocess.Popen(
        [
            str(bench.VENV_BIN / "py-spy"),
            "record",
            "--pid",
            str(pid),
            *flags,
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _read(path):
    stacks = []
    # Lines are "frame;frame;... count"; with --subprocesses the first frame names the process
    # by its command line, whose newlines (gunicorn's) py-spy keeps: a line without a count
    # continues the next one.
    pending = ""
    for line in path.read_text().splitlines():
        stack, _, count = (pending + line).rpartition(" ")
        if not count.isdigit():
            pending += line + " "
            continue
        pending = ""
        stacks.append((stack.split(";"), int(count)))
    return stacks


def _summary(stacks):
    """CPU samples only: py-spy leaves out threads waiting (for a request, or for PostgreSQL's
    answer), so the database's own time is not here; bench/REPORT.md has the SQL times."""
    by_part, own_frames = collections.Counter(), collections.Counter()
    total = sum(count for _, count in stacks)
    for frames, count in stacks:
        by_part[_part(frames)] += count
        ours = [frame for frame in frames if _is_ours(frame)]
        if ours:
            own_frames[ours[-1]] += count
    return {
        "cpu_samples": total,
        "by_part": {part: round(count / max(total, 1), 3) for part, count in by_part.most_common(12)},
        "heaviest_frames_of_ours": {
            frame: round(count / max(total, 1), 3) for frame, count in own_frames.most_common(12)
        },
    }


OUR_PACKAGES = ("users", "offchat_backend", "bench")


def _path(frame):
    """py-spy names a frame `function (path:line)`, the path relative to its sys.path entry."""
    return frame.rsplit(" (", 1)[-1].split(":", 1)[0]


def _is_ours(frame):
    return _path(frame).split("/", 1)[0] in OUR_PACKAGES


def _part(frames):
    """Who the leaf frame belongs to: one of our modules, or a library or stdlib module by its
    top-level name (django, rest_framework, json, ...)."""
    path = _path(frames[-1])
    if _is_ours(frames[-1]):
        return "ours: " + path
    return path.split("/", 1)[0].removesuffix(".py")


if __name__ == "__main__":
    main()
