"""The presence WebSocket (/ws/presence/) under daphne and under uvicorn, measured side by side:
the same app (offchat_backend.asgi:application), settings, database and load, one server after
the other. Writes bench/WS_REPORT.md (or into --output DIR); the raw figures (ws_results.json) and
the servers' logs go to a temporary folder the run names.

    .venv/bin/python bench/ws.py --quick   # 200 sockets, well under a minute
    .venv/bin/python bench/ws.py           # 5,000 sockets (--sockets N to change)

Per server, with N sockets open, each authenticated as a distinct user (sessions made with
users.services.auth.log_in, tokens minted once and reused: a session a closed socket ended is
revived by the next socket on it):

a. ping -> pong round trip, every socket pinging once per PING_PERIOD (30 s in the full run, a
   client's rate; 10 s in --quick, three times that), phases spread at random, for the whole run;
b. change -> delivery: users log in and out through REST (POST /api/auth/login/, /logout/)
   while a staff socket listens; from the REST answer (the change is committed by then) to its
   `user_status_change` frame, on the staff socket and on every socket subscribed to the user
   (each ordinary socket follows 5 of the churning users);
c. server RSS per open socket, from /proc/<pid>/status before and after opening them;
d. close -> offline: a sample of sockets closes and the script polls the database until each
   user's stored status is offline (PRESENCE_DISCONNECT_GRACE, default 10 s, then the next tick).

Baselines in the same run: the other server, and the HTTP equivalents (a poll of the dashboard,
the sweep after heartbeats stop), computed from the settings (a Monte Carlo over the clients'
phases, stated as such). Plus authenticated HTTP throughput (GET /api/users/me/) under gunicorn
(3 sync workers, as Compose runs it), daphne and uvicorn, which decides whether HTTP stays on
gunicorn. The load generator shares the machine: its CPU share is reported.

Needs PostgreSQL (BENCH_WS_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/offchat_bench_ws,
created and migrated when missing, emptied at each run) and Redis (BENCH_WS_REDIS_URL, default db 6). Loopback only.
"""

import argparse
import asyncio
import http.client
import json
import os
import platform
import random
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DATABASE_URL = os.environ.get("BENCH_WS_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/offchat_bench_ws")
REDIS_URL = os.environ.get("BENCH_WS_REDIS_URL", "redis://127.0.0.1:6379/6")
SECRET_KEY = "ws-benchmark-only-secret-key-with-enough-length-for-hmac-signing"
CONFIG = {
    "DJANGO_SETTINGS_MODULE": "offchat_backend.settings.development",
    "DEBUG": "false",
    "DATABASE_URL": DATABASE_URL,
    "REDIS_URL": REDIS_URL,
    "SECRET_KEY": SECRET_KEY,
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "READ_DOT_ENV_FILE": "false",
    "JWT_ACCESS_TOKEN_MINUTES": "600",  # minted once for the whole run
    "LOG_LEVEL": "WARNING",
    # One client address for every simulated user: per-user limits only.
    "THROTTLE_RATE_USER": "1000000/min",
    "THROTTLE_RATE_LOGIN": "1000000/min",
    "THROTTLE_RATE_LOGIN_USERNAME": "1000000/min",
}
os.environ.update(CONFIG)
sys.path.insert(0, str(REPO))

QUICK = {
    "sockets": 200,
    "ping_period": 10.0,
    "churn_users": 20,
    "churners": 3,
    "churn_seconds": 11.0,
    "close_sample": 50,
    "http_seconds": 2.0,
    "http_threads": 8,
}
FULL = {
    "sockets": 5000,
    "ping_period": 30.0,
    "churn_users": 50,
    "churners": 4,
    "churn_seconds": 30.0,
    "close_sample": 500,
    "http_seconds": 8.0,
    "http_threads": 12,
}
SUBSCRIPTIONS_PER_SOCKET = 5
OPEN_CONCURRENCY = 50
CHURN_PASSWORD = "bench-ws-password"
READING_MARKER = "<!-- reading: written by hand from the figures above; bench/ws.py keeps it -->"


# --- Database and users ---------------------------------------------------------------------------
def psql(url, sql):
    subprocess.run(["psql", url, "-qtAc", sql], check=True, capture_output=True, text=True, timeout=60)


def fresh_database():
    """The bench's own database, created and migrated when missing, emptied otherwise."""
    server = urlparse(DATABASE_URL)
    maintenance = server._replace(path="/postgres").geturl()
    name = server.path.strip("/")
    exists = subprocess.run(
        ["psql", maintenance, "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not exists:
        psql(maintenance, f'CREATE DATABASE "{name}"')
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    call_command("flush", verbosity=0, interactive=False)


def make_users(scale):
    """N socket users with a session and an access token each, a staff user, churn users."""
    from django.contrib.auth.hashers import make_password

    from users.models import User
    from users.services import auth

    n = scale["sockets"]
    User.objects.bulk_create([User(username=f"ws{i:05d}", password="!") for i in range(n)], batch_size=2000)
    User.objects.bulk_create(
        [User(username=f"churn{i:03d}", password=make_password(CHURN_PASSWORD)) for i in range(scale["churn_users"])]
    )
    staff = User.objects.create_user("ws-staff", password="!", is_staff=True)
    started = time.monotonic()
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    def mint(user):
        try:
            return auth.log_in(user=user).access
        finally:
            connection.close()

    with ThreadPoolExecutor(4) as pool:
        tokens = list(pool.map(mint, User.objects.filter(username__startswith="ws0").order_by("pk")))
    minted = time.monotonic() - started
    churn = list(User.objects.filter(username__startswith="churn").order_by("pk").values_list("pk", "username"))
    return {"tokens": tokens, "staff_token": auth.log_in(user=staff).access, "churn": churn, "mint_seconds": minted}


def stored_offline(user_ids):
    from users.models import User

    return set(User.objects.filter(pk__in=user_ids, online_status="offline").values_list("pk", flat=True))


def user_ids_of(tokens):
    from rest_framework_simplejwt.tokens import AccessToken

    return [int(AccessToken(token)["user_id"]) for token in tokens]


# --- Processes --------------------------------------------------------------------------------------
def server_command(name, port):
    if name == "daphne":
        return [str(VENV_BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "offchat_backend.asgi:application"]
    if name == "uvicorn":
        return [
            str(VENV_BIN / "uvicorn"), "offchat_backend.asgi:application", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    return [
        str(VENV_BIN / "gunicorn"), "offchat_backend.wsgi:application", f"--bind=127.0.0.1:{port}", "--workers=3",
    ]  # fmt: skip


def free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, name, log_dir):
        self.name, self.port = name, free_port()
        self.log = open(log_dir / f"ws-bench-{name}.log", "wb")
        self.process = subprocess.Popen(
            server_command(name, self.port), cwd=REPO, env={**os.environ}, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"{name} exited; see {self.log.name}"
            if http_get(self.port, "/api/health/")[0]:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{name} did not answer in 60 s")

    def pids(self):
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        extra = [int(pid) for pid in children.read_text().split()] if children.exists() else []
        return [self.process.pid, *extra]

    def rss_bytes(self):
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def cpu_seconds(self):
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        return total

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def http_get(port, path, token=None, timeout=5):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    except OSError:
        return 0, b""
    finally:
        connection.close()


def http_post(port, path, body, token=None, timeout=30):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        connection.request("POST", path, body=json.dumps(body), headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def http_throughput(port, tokens, *, seconds, threads):
    """Authenticated GET /api/users/me/ over keep-alive connections, `threads` at once."""
    tokens = tokens[: threads * 2]  # a presence write per user at most every 25 s: mostly reads, as in use
    for token in tokens:
        http_get(port, "/api/users/me/", token)
    latencies, errors, stop = [], [0], time.monotonic() + seconds

    def run(offset):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        i = offset
        while time.monotonic() < stop:
            token = tokens[i % len(tokens)]
            i += threads
            started = time.perf_counter()
            try:
                connection.request("GET", "/api/users/me/", headers={"Authorization": f"Bearer {token}"})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors[0] += 1
        connection.close()

    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    began = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.monotonic() - began
    return {"rps": len(latencies) / elapsed, **percentiles(latencies), "errors": errors[0]}


# --- Figures ------------------------------------------------------------------------------------------
def percentile(values, q):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def percentiles(values):
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99)}


def cpu_self():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def http_offline_model(*, heartbeat, timeout, sweep, granularity, samples=200_000, seed=7):
    """Seconds from a tab closing to its user's row saying offline, over HTTP: the last
    heartbeat that wrote was up to a heartbeat (or the write granularity) before the close; the
    row is offline at the first sweep that finds it older than the timeout (sweeps every
    `sweep` s at a phase of their own). Also when the status *shown* (computed at read time)
    turns offline: last write + timeout."""
    rng = random.Random(seed)
    swept, shown = [], []
    writes_every = heartbeat * max(1, -(-granularity // heartbeat)) if granularity else heartbeat
    for _ in range(samples):
        since_write = rng.uniform(0, writes_every)  # close happens this long after the last write
        phase = rng.uniform(0, sweep)
        due = timeout - since_write  # from the close
        first_sweep = phase + sweep * max(0, -(-(due - phase) // sweep))
        swept.append(first_sweep)
        shown.append(max(0.0, due))
    return {"swept": percentiles(swept), "shown": percentiles(shown)}


def poll_delivery_model(*, poll_interval, samples=200_000, seed=11):
    rng = random.Random(seed)
    return percentiles([rng.uniform(0, poll_interval) for _ in range(samples)])


# --- The load generator -------------------------------------------------------------------------------
class Client:
    def __init__(self, token, index):
        self.token, self.index = token, index
        self.socket = None
        self.ping_sent: float | None = None
        self.reader = None
        self.closed_by_us = False


async def measure_server(name, scale, users, log_dir):
    from websockets.asyncio.client import connect

    server = Server(name, log_dir)
    result = {"server": name}
    loop_started = time.monotonic()
    rng = random.Random(1)
    churn_ids = [pk for pk, _ in users["churn"]]
    pongs, deliveries, churn_events = [], [], {}
    stop_pinging = asyncio.Event()
    errors = {"open": 0, "closed_early": 0}
    try:
        result["http"] = await asyncio.to_thread(
            http_throughput, server.port, users["tokens"], seconds=scale["http_seconds"], threads=scale["http_threads"]
        )
        url = f"ws://127.0.0.1:{server.port}/ws/presence/"

        async def read(client, staff=False):
            try:
                async for raw in client.socket:
                    now = time.monotonic()
                    frame = json.loads(raw)
                    kind = frame.get("type")
                    if kind == "pong" and client.ping_sent is not None:
                        pongs.append(now - client.ping_sent)
                        client.ping_sent = None
                    elif kind == "user_status_change":
                        deliveries.append((staff, int(frame["user_id"]), frame["online_status"], now))
            except Exception:  # noqa: BLE001 (a closed socket ends its reader, whatever the reason)
                pass
            if not stop_pinging.is_set() and not client.closed_by_us:
                errors["closed_early"] += 1

        async def open_socket(client, *, subscribe):
            client.socket = await connect(f"{url}?token={client.token}", ping_interval=None, open_timeout=120)
            hello = json.loads(await client.socket.recv())
            assert hello["type"] == "hello", hello
            client.extensions = [type(ext).__name__ for ext in client.socket.protocol.extensions]
            if subscribe:
                await client.socket.send(json.dumps({"type": "subscribe", "user_ids": subscribe}))
                while json.loads(await client.socket.recv())["type"] != "presence":
                    pass

        # The staff listener first, then the baseline RSS.
        staff = Client(users["staff_token"], -1)
        await open_socket(staff, subscribe=None)
        staff.reader = asyncio.create_task(read(staff, staff=True))
        await asyncio.sleep(1.0)
        rss_before = server.rss_bytes()
        clients = [Client(token, i) for i, token in enumerate(users["tokens"])]
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def open_one(client):
            async with gate:
                try:
                    await open_socket(client, subscribe=rng.sample(churn_ids, SUBSCRIPTIONS_PER_SOCKET))
                except Exception:  # noqa: BLE001
                    errors["open"] += 1
                    client.socket = None
                    return
                client.reader = asyncio.create_task(read(client))

        cpu_gen, cpu_server, wall = cpu_self(), server.cpu_seconds(), time.monotonic()
        opening = time.monotonic()
        await asyncio.gather(*(open_one(client) for client in clients))
        result["open_seconds"] = time.monotonic() - opening
        live = [client for client in clients if client.socket is not None]
        result["sockets_open"] = len(live)
        result["extensions"] = sorted({ext for client in live for ext in client.extensions})
        await asyncio.sleep(2.0)
        rss_after = server.rss_bytes()
        result["rss_before_mb"] = rss_before / 2**20
        result["rss_after_mb"] = rss_after / 2**20
        result["rss_per_socket_kb"] = (rss_after - rss_before) / max(1, len(live)) / 1024

        # (a) Pings, for the rest of the run.
        period = scale["ping_period"]

        async def pinger(client):
            await asyncio.sleep(rng.uniform(0, period))
            while not stop_pinging.is_set() and client.socket is not None:
                if client.ping_sent is None:
                    client.ping_sent = time.monotonic()
                    try:
                        await client.socket.send('{"type":"ping"}')
                    except Exception:  # noqa: BLE001
                        return
                try:
                    await asyncio.wait_for(stop_pinging.wait(), timeout=period)
                except TimeoutError:
                    pass

        pingers = [asyncio.create_task(pinger(client)) for client in live]
        ping_started = time.monotonic()

        # (d) Close a sample, then poll the database until each user shows offline, while (b) runs.
        sample = live[-min(scale["close_sample"], len(live)) :]
        sample_ids = user_ids_of([client.token for client in sample])
        closed_at, offline_at = {}, {}

        async def close_and_watch():
            for user_id, client in zip(sample_ids, sample, strict=True):
                client.closed_by_us = True
                socket, client.socket = client.socket, None
                await socket.close()
                closed_at[user_id] = time.monotonic()
            deadline = time.monotonic() + 60
            while len(offline_at) < len(closed_at) and time.monotonic() < deadline:
                now = time.monotonic()
                for user_id in await asyncio.to_thread(stored_offline, list(set(closed_at) - set(offline_at))):
                    offline_at[user_id] = now
                await asyncio.sleep(0.1)

        watcher = asyncio.create_task(close_and_watch())

        # (b) Logins and logouts through REST while sockets listen.
        churn_free = list(users["churn"])
        rng.shuffle(churn_free)
        churn_deadline = time.monotonic() + scale["churn_seconds"]

        async def churner():
            while time.monotonic() < churn_deadline and churn_free:
                user_id, username = churn_free.pop()
                login = await asyncio.to_thread(
                    http_post, server.port, "/api/auth/login/", {"username": username, "password": CHURN_PASSWORD}
                )
                churn_events[(user_id, "online")] = time.monotonic()
                assert login[0] == 200, login
                await asyncio.sleep(rng.uniform(1.0, 2.0))
                logout = await asyncio.to_thread(
                    http_post, server.port, "/api/auth/logout/", {"refresh": login[1]["refresh"]}, login[1]["access"]
                )
                churn_events[(user_id, "offline")] = time.monotonic()
                assert logout[0] == 200, logout
                await asyncio.sleep(rng.uniform(1.0, 2.0))
                churn_free.insert(0, (user_id, username))

        await asyncio.gather(*(churner() for _ in range(scale["churners"])))
        await asyncio.sleep(2.0)  # the last pushes
        await watcher
        # A churn user comes round again only after the whole pool: one event per key at a time.
        staff_latency, fanout_latency, missing = [], [], 0
        for (user_id, status), answered in churn_events.items():
            got = [d for d in deliveries if d[1] == user_id and d[2] == status and d[3] >= answered - 5]
            staff_got = [d[3] for d in got if d[0]]
            if staff_got:
                staff_latency.append(min(staff_got) - answered)
            else:
                missing += 1
            fanout_latency += [d[3] - answered for d in got if not d[0]]
        result["delivery_staff"] = percentiles(staff_latency)
        result["delivery_fanout"] = percentiles([x for x in fanout_latency if -1 < x < 30])
        result["delivery_missing"] = missing
        result["churn_events"] = len(churn_events)
        result["offline_after_close"] = percentiles([offline_at[u] - closed_at[u] for u in offline_at])
        result["offline_missing"] = len(closed_at) - len(offline_at)

        result["pong"] = percentiles(pongs)
        result["ping_rate"] = len(live) / period
        result["ping_seconds"] = time.monotonic() - ping_started
        elapsed = time.monotonic() - wall
        result["generator_cpu_share"] = (cpu_self() - cpu_gen) / elapsed / os.cpu_count()
        result["server_cpu_share"] = (server.cpu_seconds() - cpu_server) / elapsed / os.cpu_count()
        result["errors"] = dict(errors)
        stop_pinging.set()
        await asyncio.gather(*pingers, return_exceptions=True)
        await asyncio.gather(
            *(c.socket.close() for c in [*live, staff] if c.socket is not None), return_exceptions=True
        )
        readers = [c.reader for c in [*clients, staff] if c.reader is not None]
        await asyncio.wait_for(asyncio.gather(*readers, return_exceptions=True), timeout=60)
        result["output_has_token"] = any(
            token in Path(server.log.name).read_text(errors="replace") for token in users["tokens"][:50]
        )
    finally:
        server.stop()
    result["wall_seconds"] = time.monotonic() - loop_started
    return result


def measure_gunicorn(scale, users, log_dir):
    server = Server("gunicorn", log_dir)
    try:
        return {
            "http": http_throughput(
                server.port, users["tokens"], seconds=scale["http_seconds"], threads=scale["http_threads"]
            )
        }
    finally:
        server.stop()


# --- Report ---------------------------------------------------------------------------------------------
def ms(seconds):
    return f"{seconds * 1000:.1f} ms"


def ratio(ours, base):
    return f"{ours / base:.2f}" if base else "n/a"


def both(d, u, key, fmt=ms):
    """daphne's and uvicorn's p50 / p99 of `key`, and their ratios."""
    cells = [f"{fmt(r[key]['p50'])} / {fmt(r[key]['p99'])}" for r in (d, u)]
    ratios = f"{ratio(u[key]['p50'], d[key]['p50'])} / {ratio(u[key]['p99'], d[key]['p99'])}"
    return f"| {cells[0]} | {cells[1]} | {ratios} "


def seconds(value):
    return f"{value:.1f} s"


def report(results, scale, users, quick):
    from django.conf import settings

    d, u, g = results["daphne"], results["uvicorn"], results["gunicorn"]
    grace = settings.PRESENCE_DISCONNECT_GRACE
    http_off = http_offline_model(
        heartbeat=settings.PRESENCE_HEARTBEAT_INTERVAL,
        timeout=settings.PRESENCE_INACTIVITY_TIMEOUT,
        sweep=settings.PRESENCE_SWEEP_INTERVAL,
        granularity=settings.PRESENCE_WRITE_GRANULARITY,
    )
    swept, shown = http_off["swept"], http_off["shown"]
    poll = poll_delivery_model(poll_interval=settings.DASHBOARD_POLL_INTERVAL)
    n, cores = scale["sockets"], os.cpu_count()
    staff, fanout, offline = d["delivery_staff"], d["delivery_fanout"], d["offline_after_close"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    quick_flag = " --quick" if quick else ""
    ping_rate = "3x a client's rate (one ping per 30 s), to fit --quick" if quick else "a client's rate"
    lines = [
        "# Presence WebSocket: daphne vs uvicorn",
        "",
        f"Generated by `bench/ws.py{quick_flag}` on {when}. {n:,} sockets per server, each a distinct user; "
        "the same app, settings (development, `DEBUG=false`), PostgreSQL and Redis; one server after the other. "
        "Ratios are uvicorn / daphne unless said.",
        "",
        "| figure | daphne | uvicorn | ratio u/d | baseline (same run) |",
        "|---|---|---|---|---|",
        f"| sockets open (of {n:,}); seconds to open them, {OPEN_CONCURRENCY} at once "
        f"| {d['sockets_open']:,}; {seconds(d['open_seconds'])} | {u['sockets_open']:,}; {seconds(u['open_seconds'])} "
        f"| {ratio(u['open_seconds'], d['open_seconds'])} | |",
        f"| (a) ping -> pong p50 / p99 ({d['ping_rate']:.0f} pings/s) {both(d, u, 'pong')}"
        f"| the other server; HTTP `GET /me/` under load on gunicorn: p50 {ms(g['http']['p50'])} |",
        f"| (b) REST change -> staff socket p50 / p99 ({staff['n']} / {u['delivery_staff']['n']} changes) "
        f"{both(d, u, 'delivery_staff')}"
        f"| dashboard poll every {settings.DASHBOARD_POLL_INTERVAL} s (computed): "
        f"{ms(poll['p50'])} / {ms(poll['p99'])}, "
        f"{poll['p50'] / staff['p50']:.1f}x / {poll['p99'] / staff['p99']:.1f}x daphne's |",
        f"| (b) same changes -> subscribed sockets p50 / p99 ({fanout['n']:,} / {u['delivery_fanout']['n']:,} frames) "
        f"{both(d, u, 'delivery_fanout')}| |",
        f"| (c) server RSS per open socket | {d['rss_per_socket_kb']:.1f} KiB | {u['rss_per_socket_kb']:.1f} KiB "
        f"| {ratio(u['rss_per_socket_kb'], d['rss_per_socket_kb'])} "
        f"| RSS before -> after: daphne {d['rss_before_mb']:.0f} -> {d['rss_after_mb']:.0f} MiB, "
        f"uvicorn {u['rss_before_mb']:.0f} -> {u['rss_after_mb']:.0f} MiB |",
        f"| (d) socket closed -> DB row offline p50 / p99 ({offline['n']} closes; grace {grace:g} s) "
        f"{both(d, u, 'offline_after_close', seconds)}"
        f"| HTTP, heartbeats stop -> the sweep writes offline (computed): {swept['p50']:.0f} s / {swept['p99']:.0f} s, "
        f"{swept['p50'] / offline['p50']:.1f}x / {swept['p99'] / offline['p99']:.1f}x daphne's; "
        f"shown offline at read time: {shown['p50']:.0f} s / {shown['p99']:.0f} s |",
        f"| HTTP `GET /api/users/me/`, {scale['http_threads']} keep-alive clients "
        f"| {d['http']['rps']:.0f} req/s, p99 {ms(d['http']['p99'])} "
        f"| {u['http']['rps']:.0f} req/s, p99 {ms(u['http']['p99'])} "
        f"| {ratio(u['http']['rps'], d['http']['rps'])} "
        f"| gunicorn, 3 sync workers: {g['http']['rps']:.0f} req/s, p99 {ms(g['http']['p99'])}; "
        f"daphne {ratio(d['http']['rps'], g['http']['rps'])}x, "
        f"uvicorn {ratio(u['http']['rps'], g['http']['rps'])}x of it |",
        f"| server CPU share over the socket phases (of {cores} cores) | {d['server_cpu_share']:.0%} "
        f"| {u['server_cpu_share']:.0%} | {ratio(u['server_cpu_share'], d['server_cpu_share'])} | |",
        f"| load generator's CPU share (of {cores} cores) | {d['generator_cpu_share']:.0%} "
        f"| {u['generator_cpu_share']:.0%} | | |",
        "| errors: sockets not opened, closed early; changes never delivered; closes never offline "
        f"| {d['errors']['open']}, {d['errors']['closed_early']}; {d['delivery_missing']}; {d['offline_missing']} "
        f"| {u['errors']['open']}, {u['errors']['closed_early']}; {u['delivery_missing']}; "
        f"{u['offline_missing']} | | |",
        "| WebSocket extensions negotiated (the client offers permessage-deflate, as browsers do) "
        f"| {', '.join(d['extensions']) or 'none'} | {', '.join(u['extensions']) or 'none'} | | |",
        "| a `?token=` in the server's output (uvicorn: `--no-access-log --log-level warning`) "
        f"| {d['output_has_token']} | {u['output_has_token']} | | |",
        "",
        "## How",
        "",
        f"- Machine: {cores} cores ({platform.machine()}), Python {platform.python_version()}; the server, PostgreSQL, "
        "Redis and the load generator (one asyncio process, `websockets` client) share it, and so did other "
        "engineers' test runs: absolute figures are noisy, compare within a row.",
        f"- Pings: every socket pings once per {scale['ping_period']:g} s at a random phase, from the end of "
        f"opening to the end of the run ({ping_rate}).",
        f"- Changes: {scale['churners']} REST clients log churn users in and out (1-2 s apart) for "
        f"{scale['churn_seconds']:g} s; latency from the REST answer (committed by then) to the frame; "
        f"`PRESENCE_PUSH_INTERVAL` {settings.PRESENCE_PUSH_INTERVAL:g} s. Every ordinary socket follows "
        f"{SUBSCRIPTIONS_PER_SOCKET} of the {scale['churn_users']} churn users.",
        f"- Offline: {scale['close_sample']} sockets close one after the other as the churn starts; the "
        "database is polled every 100 ms.",
        "- HTTP baselines are computed from the settings (Monte Carlo over client and sweep phases): heartbeat "
        f"{settings.PRESENCE_HEARTBEAT_INTERVAL} s, timeout {settings.PRESENCE_INACTIVITY_TIMEOUT} s, sweep every "
        f"{settings.PRESENCE_SWEEP_INTERVAL} s, dashboard poll {settings.DASHBOARD_POLL_INTERVAL} s.",
        f"- Sessions and tokens for {n:,} users made with `auth.log_in` in {users['mint_seconds']:.1f} s, "
        "once for both servers.",
        "",
        "Raw figures and the servers' logs: the temporary folder the run names at its end.",
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sockets", type=int)
    parser.add_argument("--servers", default="daphne,uvicorn")
    parser.add_argument("--output", type=Path, default=REPO / "bench")
    parser.add_argument("--report-only", action="store_true", help="rewrite WS_REPORT.md from --results")
    parser.add_argument("--results", type=Path, help="a ws_results.json an earlier run wrote")
    args = parser.parse_args()
    if args.report_only:
        import django

        django.setup()
        results = json.loads(args.results.read_text())
        write_report(args.output, results, results["scale"], results.get("users", {"mint_seconds": float("nan")}))
        return
    scale = dict(QUICK if args.quick else FULL)
    if args.sockets:
        scale["sockets"] = args.sockets
    args.output.mkdir(parents=True, exist_ok=True)
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="offchat-ws-bench-"))  # the servers' logs and the raw figures
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    assert hard > scale["sockets"] + 500, f"open files limit {hard} is too low for {scale['sockets']} sockets"
    started = time.monotonic()
    fresh_database()
    users = make_users(scale)
    print(f"{scale['sockets']} users and tokens ready in {time.monotonic() - started:.1f} s", flush=True)
    results = {"gunicorn": measure_gunicorn(scale, users, work)}
    for name in args.servers.split(","):
        results[name] = asyncio.run(measure_server(name, scale, users, work))
        print(json.dumps(results[name], indent=1, default=str), flush=True)
    results["scale"], results["users"] = scale, {"mint_seconds": users["mint_seconds"]}
    (work / "ws_results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"raw figures and the servers' logs: {work}")
    print(write_report(args.output, results, scale, users))
    print(f"done in {time.monotonic() - started:.0f} s")


def write_report(output, results, scale, users):
    text = report(results, scale, users, scale["sockets"] == QUICK["sockets"] and scale["ping_period"] < 30)
    path = output / "WS_REPORT.md"
    # The reading below the marker is written by hand: a rerun keeps it, to check against.
    kept = path.read_text().split(READING_MARKER, 1)[1] if path.exists() and READING_MARKER in path.read_text() else ""
    path.write_text(text + READING_MARKER + (kept or "\n\n## Reading\n\n(to be written from the figures above)\n"))
    return text


if __name__ == "__main__":
    main()
