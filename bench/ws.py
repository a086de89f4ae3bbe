"""Live presence over the WebSocket (/ws/presence/) against today's HTTP presence (heartbeats and
polls), every figure next to its HTTP baseline measured in the same run, on the same processes:
gunicorn (3 sync workers) for REST, one daphne process for the sockets, and a real
`celery -A offchat_backend worker --beat` sweeping. Writes bench/WS_REPORT.md (or into --output DIR)
above its hand-written part, which a rerun keeps; the raw figures (ws_vs_http.json) and the
processes' logs go to a temporary folder the run names.

    .venv/bin/python bench/ws.py --quick   # about a minute; shortened settings, not comparable
    .venv/bin/python bench/ws.py           # production's settings; about 12 minutes

1. Time to offline after a client disappears: socket clients close their socket, HTTP clients
   (a heartbeat every PRESENCE_HEARTBEAT_INTERVAL through gunicorn, as the frontend) stop, at
   staggered times over the heartbeat phase; one staff poller reads GET /api/users/all-users/
   every 0.5 s (the status shown) and the database is polled for the stored status.
2. Push latency: churn users log in and out through REST on gunicorn; from the REST answer to
   the frame on a staff socket (daphne), and to the first answer of staff pollers that follow
   the change feed (?since=<cursor>) every DASHBOARD_POLL_INTERVAL at random phases.
   Parts 1 and 2 run at the same time.
3. Clients held: sockets opened on one daphne process (50 at once, until all 5,000 are open or
   5 minutes pass), then held 90 s pinging every 30 s (ping p99, connects/s, RSS per socket);
   then bench/load.py (bench/bench.py's capacity clients) against the same gunicorn for the same
   90 s per level, half as many clients then as many, until a level misses p99 < 100 ms.
   The load generator's CPU share is reported for both.

`--capacity N[,N...]` runs part 3 alone, as issue 14's capacity row states it, and prints JSON: N
sockets (opened by `--generators` processes of their own, spread over `--processes` daphne
processes) pinging every 30 s, 1% of their users changing state a minute (presence service calls
from this process), 10 staff sockets that must receive every change, held 180 s. It reports ping ->
pong and change -> staff-socket latencies, RSS and tracked objects per socket, the server's and the
generators' CPU shares, the server's database statements per minute (counted in the server by
bench.ws:counted_application, which also reports its garbage collections and event-loop lag), and
`--py-spy` profiles of the ramp and the hold. Figures and reading: bench/WS_CAPACITY.md.

    .venv/bin/python -m bench.ws --capacity 5000 --py-spy
    .venv/bin/python -m bench.ws --capacity 20000 --processes 2

`--servers daphne,uvicorn` runs instead the comparison of ASGI servers that chose daphne (ping,
push, RSS, close -> offline and HTTP throughput under each, one after the other); its table goes
to the run's temporary folder (WS_SERVERS.md), and the reading of it is kept in WS_REPORT.md.

Needs PostgreSQL (BENCH_WS_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/offchat_bench_ws,
created and migrated when missing, emptied at each run) and Redis (BENCH_WS_REDIS_URL, default db 6,
flushed; the worker's broker). Loopback only.
"""

import argparse
import asyncio
import contextlib
import http.client
import itertools
import json
import os
import platform
import random
import resource
import subprocess
import sys
import threading
import time
from collections import Counter
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


def live_sessions(prefix):
    from users.models import PresenceSession

    return PresenceSession.objects.filter(user__username__startswith=prefix, ended_at__isnull=True).count()


def stored_offline(user_ids):
    from users.models import User

    return set(User.objects.filter(pk__in=user_ids, online_status="offline").values_list("pk", flat=True))


def user_ids_of(tokens):
    from rest_framework_simplejwt.tokens import AccessToken

    return [int(AccessToken(token)["user_id"]) for token in tokens]


# --- Processes --------------------------------------------------------------------------------------
ASGI_APP = "offchat_backend.asgi:application"
# daphne's flags in production (README.md, docker-compose.yml) besides the address: its protocol
# ping to every socket every 20 s (autobahn) doubled the frames a process handles, for nothing the
# clients' own pings and PRESENCE_WS_IDLE_TIMEOUT do not already do (bench/WS_CAPACITY.md).
DAPHNE_FLAGS = ("--ping-interval", "3600")


def server_command(name, port, *, app=ASGI_APP, extra=()):
    if name == "daphne":
        # `python -m daphne`: the `daphne` script's entry point, under the interpreter's name.
        return [
            str(VENV_BIN / "python"),
            "-m",
            "daphne",
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            *DAPHNE_FLAGS,
            *extra,
            app,
        ]
    if name == "uvicorn":
        return [
            str(VENV_BIN / "uvicorn"), app, "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--log-level", "warning", *extra,
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
    def __init__(self, name, log_dir, *, app=ASGI_APP, extra=(), env=None):
        self.name, self.port = name, free_port()
        self.log = open(log_dir / f"ws-bench-{name}.log", "wb")
        self.command = server_command(name, self.port, app=app, extra=extra) if name != "gunicorn" else None
        self.command = self.command or server_command(name, self.port)
        self.process = subprocess.Popen(
            self.command, cwd=REPO, env={**os.environ, **(env or {})}, stdout=self.log, stderr=subprocess.STDOUT
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


# --- WebSocket vs HTTP, measured side by side in one run --------------------------------------------
# Presence settings of each mode, given to every process (gunicorn, daphne, the Celery worker with
# beat) and to this one. The full run keeps production's defaults; --quick shortens them (its
# figures show that the parts work, they are not comparable with production).
VS_SETTINGS = {
    "full": {
        "PRESENCE_INACTIVITY_TIMEOUT": "120",
        "PRESENCE_HEARTBEAT_INTERVAL": "30",
        "PRESENCE_SWEEP_INTERVAL": "60",
        "PRESENCE_DISCONNECT_GRACE": "10",
        "PRESENCE_PUSH_INTERVAL": "1.0",
        "DASHBOARD_POLL_INTERVAL": "10",
    },
    "quick": {
        "PRESENCE_INACTIVITY_TIMEOUT": "6",
        "PRESENCE_HEARTBEAT_INTERVAL": "2",
        "PRESENCE_WRITE_GRANULARITY": "1",
        "PRESENCE_SWEEP_INTERVAL": "3",
        "PRESENCE_DISCONNECT_GRACE": "1",
        "PRESENCE_PUSH_INTERVAL": "1.0",
        "DASHBOARD_POLL_INTERVAL": "2",
    },
}
VS_FULL = {
    "offline_clients": 100,  # per transport
    "stop_after": 35.0,  # each client disappears this long after the start plus U(0, heartbeat)
    "offline_deadline": 200.0,  # seconds after the last disappearance to wait for offline
    "list_poll": 0.5,  # the staff list poller's period
    "churners": 8,
    "churn_users": 40,
    "churn_hold": (12.0, 18.0),  # a churn user stays logged in (and then out) longer than a poll
    "churn_gap": (1.0, 3.0),
    "churn_seconds": 180.0,
    "feed_pollers": 6,
    "capacity_sockets": 5000,
    "ramp_limit": 300.0,
    "hold_seconds": 90.0,
    "capacity_ping_period": 30.0,
    "http_levels": (0.5, 1.0),  # HTTP clients held: these shares of the sockets held
}
VS_QUICK = {
    "offline_clients": 20,
    "stop_after": 3.0,
    "offline_deadline": 17.0,
    "list_poll": 0.5,
    "churners": 3,
    "churn_users": 12,
    "churn_hold": (2.5, 4.0),
    "churn_gap": (0.5, 1.0),
    "churn_seconds": 14.0,
    "feed_pollers": 3,
    "capacity_sockets": 200,
    "ramp_limit": 30.0,
    "hold_seconds": 10.0,
    "capacity_ping_period": 5.0,
    "http_levels": (1.0,),
}
HELD_P99 = 0.100  # bench/bench.py's capacity criterion: p99 under 100 ms, no errors


def sleep_until(moment):
    return asyncio.sleep(max(0.0, moment - time.monotonic()))


def http_json(port, method, path, token=None, body=None, timeout=30):
    """(status, parsed body, monotonic time the answer was read); status 0 on a failure."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = connection.getresponse()
        content = response.read()
        return response.status, json.loads(content or b"null"), time.monotonic()
    except (OSError, ValueError):
        return 0, None, time.monotonic()
    finally:
        connection.close()


def log_in_users(prefix, count, *, staff=False, password="!"):
    """`count` users made and logged in with auth.log_in (the login's own path): [(id, access)]."""
    from users.models import User
    from users.services import auth

    User.objects.bulk_create(
        [User(username=f"{prefix}{i:04d}", password=password, is_staff=staff) for i in range(count)]
    )
    users = User.objects.filter(username__startswith=prefix).order_by("pk")
    return [(user.pk, auth.log_in(user=user).access) for user in users]


def bulk_sessions(prefix, count):
    """Many users with a live session each and an access token carrying it, written in bulk (as
    bench/bench.py mints its capacity tokens): [(id, access)]."""
    from django.utils import timezone
    from rest_framework_simplejwt.tokens import AccessToken

    from users.models import PresenceSession, User
    from users.selectors.sessions import SESSION_CLAIM

    User.objects.bulk_create([User(username=f"{prefix}{i:05d}", password="!") for i in range(count)], batch_size=2000)
    users = list(User.objects.filter(username__startswith=prefix).order_by("pk"))
    now = timezone.now()
    sessions = PresenceSession.objects.bulk_create(
        [
            PresenceSession(user=user, user_agent="bench", created_at=now, last_seen=now, last_active=now)
            for user in users
        ],
        batch_size=2000,
    )
    # Online already, as bench/bench.py's minted clients are: the run measures holding clients, not
    # a storm of first logins (each of which takes a change-feed id, one at a time).
    User.objects.filter(pk__in=[user.pk for user in users]).update(
        online_status="online", last_seen=now, last_active=now
    )
    tokens = []
    for user, session in zip(users, sessions, strict=True):
        token = AccessToken.for_user(user)
        token[SESSION_CLAIM] = str(session.pk)
        tokens.append((user.pk, str(token)))
    return tokens


class Worker:
    """`celery -A offchat_backend worker --beat -l info`, as production runs it, on the run's
    broker (Redis) and database; its own process group, stopped whole."""

    def __init__(self, log_dir):
        self.log = open(log_dir / "ws-bench-celery.log", "wb")
        command = [str(VENV_BIN / "celery"), "-A", "offchat_backend", "worker", "--beat", "-l", "info"]
        self.process = subprocess.Popen(
            command, cwd=REPO, env={**os.environ}, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"celery exited; see {self.log.name}"
            if self.sweeps():
                return  # beat's first sweep ran: the schedule is live
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"celery did not sweep within 90 s; see {self.log.name}")

    def sweeps(self):
        text = Path(self.log.name).read_text(errors="replace")
        return sum("check_and_mark_offline_users[" in line and " succeeded in " in line for line in text.splitlines())

    def stop(self):
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


async def open_presence_socket(port, token):
    from websockets.asyncio.client import connect

    socket = await connect(f"ws://127.0.0.1:{port}/ws/presence/?token={token}", ping_interval=None, open_timeout=60)
    hello = json.loads(await socket.recv())
    assert hello["type"] == "hello", hello
    return socket


async def offline_and_push(vs, users, gunicorn, daphne):
    """Parts 1 and 2 at once, on the same servers: clients of both transports disappear at
    staggered times while churn users log in and out through REST."""
    from urllib.parse import quote

    from django.conf import settings

    heartbeat = settings.PRESENCE_HEARTBEAT_INTERVAL
    rng = random.Random(3)

    async def full_list(token):
        """The dashboard's first load: the whole list and its cursor (before any change is made)."""
        status, body, _ = await asyncio.to_thread(http_json, gunicorn.port, "GET", "/api/users/all-users/", token)
        assert status == 200, (status, body)
        return body["cursor"], {int(row["id"]): row["online_status"] for row in body["results"]}

    loaded = await asyncio.gather(*(full_list(token) for token in users["staff_feed"]))
    start = time.monotonic()
    gone_at, shown_off, stored_off, early_off = {}, {}, {}, set()
    connected = {}  # watched client -> when its first heartbeat or its socket was answered: online from then
    errors = {
        **dict.fromkeys(("heartbeat", "ws_open", "ws_closed_early", "list_poll", "feed_poll", "churn"), 0),
        "staff_socket_closed": 0,
    }
    watched = {("http", uid) for uid, _ in users["http_off"]} | {("ws", uid) for uid, _ in users["ws_off"]}
    kind_of = dict((uid, kind) for kind, uid in watched)
    pongs = []

    async def http_client(uid, token, stop):
        due = start + rng.uniform(0, heartbeat)
        while due < stop:
            await sleep_until(due)
            status, _, _ = await asyncio.to_thread(
                http_json, gunicorn.port, "POST", "/api/users/heartbeat/", token, {"status": "online"}
            )
            if status == 200:
                connected.setdefault(uid, time.monotonic())
            else:
                errors["heartbeat"] += 1
            due += heartbeat
        await sleep_until(stop)
        gone_at[uid] = time.monotonic()  # no heartbeat from now on: the tab is gone

    async def ws_client(uid, token, stop):
        try:
            socket = await open_presence_socket(daphne.port, token)
        except Exception:  # noqa: BLE001
            errors["ws_open"] += 1
            return
        connected.setdefault(uid, time.monotonic())
        pending = {}

        async def read():
            try:
                async for raw in socket:
                    if json.loads(raw).get("type") == "pong" and "ping" in pending:
                        pongs.append(time.monotonic() - pending.pop("ping"))
            except Exception:  # noqa: BLE001
                pass
            if uid not in gone_at:
                errors["ws_closed_early"] += 1

        reader = asyncio.create_task(read())
        due = time.monotonic() + rng.uniform(0, heartbeat)  # clients ping every ping_interval
        while due < stop:
            await sleep_until(due)
            pending["ping"] = time.monotonic()
            await socket.send('{"type":"ping"}')
            due += heartbeat
        await sleep_until(stop)
        gone_at[uid] = time.monotonic()
        await socket.close()
        await reader

    def stops():
        return {
            uid: start + vs["stop_after"] + rng.uniform(0, heartbeat) for uid, _ in users["http_off"] + users["ws_off"]
        }

    stop_at = stops()
    last_stop = max(stop_at.values())
    offline_deadline = last_stop + vs["offline_deadline"]

    def all_off():
        return len(shown_off) == len(watched) and len(stored_off) == len(watched)

    async def list_poller():
        """One staff poller: GET /api/users/all-users/ every list_poll s, the status it shows."""
        token = users["staff_list"]
        while not all_off() and time.monotonic() < offline_deadline:
            sent = time.monotonic()
            status, body, answered = await asyncio.to_thread(
                http_json, gunicorn.port, "GET", "/api/users/all-users/", token
            )
            if status != 200:
                errors["list_poll"] += 1
            else:
                for row in body["results"]:
                    uid = int(row["id"])
                    if uid not in kind_of or row["online_status"] != "offline":
                        continue
                    if uid in gone_at:
                        shown_off.setdefault(uid, answered)
                    elif uid in connected and connected[uid] < sent:
                        early_off.add((kind_of[uid], uid))  # shown offline while still connected: a flap
            await sleep_until(sent + vs["list_poll"])

    async def db_poller():
        while not all_off() and time.monotonic() < offline_deadline:
            sent = time.monotonic()
            waiting = [uid for uid in gone_at if uid not in stored_off]
            if waiting:
                found = await asyncio.to_thread(stored_offline, waiting)
                now = time.monotonic()
                for uid in found:
                    stored_off[uid] = now
            await sleep_until(sent + 0.25)

    # Part 2: churn through REST, a staff socket on daphne, staff pollers of the change feed.
    churn_events, socket_seen, feed_seen = {}, [], []
    churn_free = list(users["churn"])
    rng.shuffle(churn_free)
    churn_deadline = start + vs["churn_seconds"]

    async def churner():
        while time.monotonic() < churn_deadline and churn_free:
            uid, username = churn_free.pop()
            status, login, answered = await asyncio.to_thread(
                http_json,
                gunicorn.port,
                "POST",
                "/api/auth/login/",
                None,
                {"username": username, "password": CHURN_PASSWORD},
            )
            if status != 200:
                errors["churn"] += 1
                continue
            churn_events[(uid, "online", len(churn_events))] = answered
            await asyncio.sleep(rng.uniform(*vs["churn_hold"]))
            status, _, answered = await asyncio.to_thread(
                http_json, gunicorn.port, "POST", "/api/auth/logout/", login["access"], {"refresh": login["refresh"]}
            )
            if status != 200:
                errors["churn"] += 1
            else:
                churn_events[(uid, "offline", len(churn_events))] = answered
            await asyncio.sleep(rng.uniform(*vs["churn_gap"]))
            churn_free.insert(0, (uid, username))

    staff_socket = await open_presence_socket(daphne.port, users["staff_ws"])

    staff_done = asyncio.Event()

    async def staff_reader():
        try:
            async for raw in staff_socket:
                frame = json.loads(raw)
                if frame.get("type") == "user_status_change":
                    socket_seen.append((int(frame["user_id"]), frame["online_status"], time.monotonic()))
        except Exception:  # noqa: BLE001
            pass
        if not staff_done.is_set():
            errors["staff_socket_closed"] += 1

    async def staff_pinger():
        """The staff client pings every ping_interval, as every client must (or is closed idle)."""
        while not staff_done.is_set():
            try:
                await asyncio.wait_for(staff_done.wait(), timeout=heartbeat)
            except TimeoutError:
                await staff_socket.send('{"type":"ping"}')

    poll_interval = settings.DASHBOARD_POLL_INTERVAL
    feed_until = churn_deadline + max(vs["churn_hold"]) + max(vs["churn_gap"]) + poll_interval + 2

    async def feed_poller(index, token):
        """The dashboard: the full list once (above), then ?since=<cursor> every DASHBOARD_POLL_INTERVAL."""
        cursor, known = loaded[index]
        due = start + rng.uniform(0, poll_interval)  # a random phase per poller
        while due < feed_until:
            await sleep_until(due)
            status, body, answered = await asyncio.to_thread(
                http_json, gunicorn.port, "GET", f"/api/users/all-users/?since={quote(cursor)}", token
            )
            if status != 200:
                errors["feed_poll"] += 1
            else:
                cursor = body["cursor"]
                for row in body["results"]:
                    uid = int(row["id"])
                    if known.get(uid) != row["online_status"]:
                        known[uid] = row["online_status"]
                        feed_seen.append((index, uid, row["online_status"], answered))
            due += poll_interval

    cpu_gen = cpu_self()
    cpu_servers = gunicorn.cpu_seconds() + daphne.cpu_seconds()
    reader = asyncio.create_task(staff_reader())
    pinger = asyncio.create_task(staff_pinger())
    tasks = [
        *(http_client(uid, token, stop_at[uid]) for uid, token in users["http_off"]),
        *(ws_client(uid, token, stop_at[uid]) for uid, token in users["ws_off"]),
        list_poller(),
        db_poller(),
        *(churner() for _ in range(vs["churners"])),
        *(feed_poller(i, token) for i, token in enumerate(users["staff_feed"])),
    ]
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - start
    staff_done.set()
    await pinger
    await staff_socket.close()
    await reader

    def offline(kind, seen):
        uids = [uid for k, uid in watched if k == kind]
        return {
            **percentiles([seen[uid] - gone_at[uid] for uid in uids if uid in seen]),
            "missing": sum(uid not in seen for uid in uids),
        }

    # Latency: from the REST answer of a change to the first delivery of that user in that status
    # after it (a churn user comes round again only after the whole pool, ~a minute later).
    def first_after(seen, uid, status, answered):
        times = [t for u, s, t in seen if u == uid and s == status and t >= answered - 1.0]
        return min(times) - answered if times else None

    socket_latency, feed_latency, socket_missing, feed_missing = [], [], 0, 0
    for (uid, status, _), answered in churn_events.items():
        latency = first_after(socket_seen, uid, status, answered)
        socket_missing += latency is None
        socket_latency += [] if latency is None else [latency]
        for index in range(len(users["staff_feed"])):
            latency = first_after([(u, s, t) for i, u, s, t in feed_seen if i == index], uid, status, answered)
            feed_missing += latency is None
            feed_latency += [] if latency is None else [latency]
    return {
        "offline": {
            "ws_shown": offline("ws", shown_off),
            "ws_stored": offline("ws", stored_off),
            "http_shown": offline("http", shown_off),
            "http_stored": offline("http", stored_off),
            "shown_offline_while_connected": len(early_off),
            "shown_offline_while_connected_by_kind": {
                kind: sum(k == kind for k, _ in early_off) for kind in ("ws", "http")
            },
        },
        "raw": {
            "churn_events": [[uid, status, answered - start] for (uid, status, _), answered in churn_events.items()],
            "socket_seen": [[uid, status, t - start] for uid, status, t in socket_seen],
            "feed_seen": [[i, uid, status, t - start] for i, uid, status, t in feed_seen],
            "gone": {uid: t - start for uid, t in gone_at.items()},
            "shown_off": {uid: t - start for uid, t in shown_off.items()},
            "stored_off": {uid: t - start for uid, t in stored_off.items()},
            "kind": kind_of,
        },
        "push": {
            "changes": len(churn_events),
            "socket": {**percentiles(socket_latency), "missing": socket_missing},
            "feed": {**percentiles(feed_latency), "missing": feed_missing, "pollers": len(users["staff_feed"])},
        },
        "pong_p99_ms": percentile(pongs, 99) * 1000 if pongs else None,
        "errors": errors,
        "seconds": elapsed,
        "generator_cpu_share": (cpu_self() - cpu_gen) / elapsed / os.cpu_count(),
        "servers_cpu_share": (gunicorn.cpu_seconds() + daphne.cpu_seconds() - cpu_servers) / elapsed / os.cpu_count(),
    }


async def hold_sockets(vs, tokens, daphne):
    """Part 3, WebSocket: open sockets OPEN_CONCURRENCY at a time until all are open or ramp_limit
    has passed, each pinging every capacity_ping_period from its opening; then hold them all for
    hold_seconds. Ping round trips of the hold are the figure at that level."""
    rng = random.Random(4)
    period = vs["capacity_ping_period"]
    pending = list(tokens)
    sockets, opened_at, errors = [], [], {"open": 0, "closed_early": 0}
    pongs = []  # (when answered, round trip)
    closing = asyncio.Event()

    async def run(socket):
        sent = {}

        async def read():
            try:
                async for raw in socket:
                    if json.loads(raw).get("type") == "pong" and "ping" in sent:
                        now = time.monotonic()
                        pongs.append((now, now - sent.pop("ping")))
            except Exception:  # noqa: BLE001
                pass
            if not closing.is_set():
                errors["closed_early"] += 1

        reader = asyncio.create_task(read())
        due = time.monotonic() + rng.uniform(0, period)
        while not closing.is_set():
            try:
                await asyncio.wait_for(closing.wait(), timeout=max(0.0, due - time.monotonic()))
                break
            except TimeoutError:
                pass
            if "ping" not in sent:
                sent["ping"] = time.monotonic()
                try:
                    await socket.send('{"type":"ping"}')
                except Exception:  # noqa: BLE001
                    break
            due += period
        return reader

    runners = []
    rss_before = daphne.rss_bytes()
    cpu_gen, cpu_server = cpu_self(), daphne.cpu_seconds()
    began = time.monotonic()
    ramp_deadline = began + vs["ramp_limit"]

    async def opener():
        while pending and time.monotonic() < ramp_deadline:
            _, token = pending.pop()
            try:
                socket = await asyncio.wait_for(open_presence_socket(daphne.port, token), timeout=60)
            except Exception:  # noqa: BLE001
                errors["open"] += 1
                continue
            sockets.append(socket)
            opened_at.append(time.monotonic())
            runners.append(asyncio.create_task(run(socket)))

    await asyncio.gather(*(opener() for _ in range(OPEN_CONCURRENCY)))
    ramp_seconds = (opened_at[-1] if opened_at else time.monotonic()) - began
    ramp_cpu_gen, ramp_cpu_server, ramp_wall = (
        cpu_self() - cpu_gen,
        daphne.cpu_seconds() - cpu_server,
        time.monotonic() - began,
    )
    await asyncio.sleep(2.0)
    rss_after = daphne.rss_bytes()
    hold_start = time.monotonic()
    cpu_gen, cpu_server = cpu_self(), daphne.cpu_seconds()
    await asyncio.sleep(vs["hold_seconds"])
    hold_end = time.monotonic()
    hold_cpu_gen, hold_cpu_server = cpu_self() - cpu_gen, daphne.cpu_seconds() - cpu_server
    still_open = len(sockets) - errors["closed_early"]
    hold_pongs = [rtt for at, rtt in pongs if hold_start <= at <= hold_end]
    closing.set()
    readers = await asyncio.gather(*runners, return_exceptions=True)
    gate = asyncio.Semaphore(200)

    async def close(socket):
        async with gate:
            await asyncio.wait_for(socket.close(), timeout=30)

    await asyncio.gather(*(close(s) for s in sockets), return_exceptions=True)
    await asyncio.wait_for(
        asyncio.gather(*(r for r in readers if isinstance(r, asyncio.Task)), return_exceptions=True), timeout=60
    )
    cores = os.cpu_count()
    return {
        "tried": len(tokens),
        "opened": len(sockets),
        "held": still_open,
        "ramp_seconds": ramp_seconds,
        "connects_per_second": len(sockets) / ramp_seconds if ramp_seconds else float("nan"),
        "ramp_limit": vs["ramp_limit"],
        "hold_seconds": vs["hold_seconds"],
        "ping_period": period,
        "hold_pong": percentiles(hold_pongs),
        # Pongs over 100 ms in the hold: (seconds into the hold, round trip), to see whether they bunch.
        "hold_slow_pongs": [[at - hold_start, rtt] for at, rtt in pongs if hold_start <= at <= hold_end and rtt > 0.1][
            :3000
        ],
        "ramp_pong": percentiles([rtt for at, rtt in pongs if at < hold_start]),
        "rss_before_mb": rss_before / 2**20,
        "rss_after_mb": rss_after / 2**20,
        "rss_per_socket_kb": (rss_after - rss_before) / max(1, len(sockets)) / 1024,
        "ramp_generator_cpu_share": ramp_cpu_gen / ramp_wall / cores,
        "ramp_server_cpu_share": ramp_cpu_server / ramp_wall / cores,
        "hold_generator_cpu_share": hold_cpu_gen / (hold_end - hold_start) / cores,
        "hold_server_cpu_share": hold_cpu_server / (hold_end - hold_start) / cores,
        "errors": errors,
    }


def hold_http_clients(vs, tokens, gunicorn, levels, work):
    """Part 3, HTTP: bench/load.py (bench/bench.py's capacity clients: a heartbeat every 30 s and a
    read a minute each, random phases, a shared pool of 64 connections, latency from when each
    request was due) against the run's gunicorn, for hold_seconds per level, from the smallest up
    until a level fails bench.py's criterion (p99 < 100 ms, no errors)."""
    path = work / "capacity-tokens.txt"
    path.write_text("".join(f"{token}\n" for _, token in tokens))
    url = f"http://127.0.0.1:{gunicorn.port}"

    def run(clients, seconds):
        command = [
            str(VENV_BIN / "python"), str(REPO / "bench" / "load.py"), "--url", url, "--tokens", str(path),
            "--clients", str(clients), "--duration", str(seconds),
        ]  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_server, rss_before = gunicorn.cpu_seconds(), gunicorn.rss_bytes()
        began = time.monotonic()
        output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 300).stdout
        wall = time.monotonic() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = json.loads(output.strip().splitlines()[-1])
        cores = os.cpu_count()
        result["generator_cpu_share"] = (
            (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / wall / cores
        )
        result["server_cpu_share"] = (gunicorn.cpu_seconds() - cpu_server) / wall / cores
        result["server_rss_mb"] = gunicorn.rss_bytes() / 2**20
        result["server_rss_before_mb"] = rss_before / 2**20
        result["passed"] = result["errors"] == 0 and result["p99_ms"] is not None and result["p99_ms"] < HELD_P99 * 1000
        return result

    run(min(100, levels[0]), 3)  # warm up every worker and the connection pool, as bench.py does
    runs = []
    for clients in levels:
        runs.append(run(clients, vs["hold_seconds"]))
        print(f"HTTP clients {clients}: {json.dumps(runs[-1])}", flush=True)
        if not runs[-1]["passed"]:
            break
    clients = levels[0]
    for _ in range(2):  # the smallest level not held: step down by halves, at most twice
        if any(run["passed"] for run in runs):
            break
        clients = max(1, clients // 2)
        runs.append(run(clients, vs["hold_seconds"]))
        print(f"HTTP clients {clients}: {json.dumps(runs[-1])}", flush=True)
    path.unlink()
    held = max((r["clients"] for r in runs if r["passed"]), default=0)
    runs.sort(key=lambda r: r["clients"])
    return {"runs": runs, "held": held}


def measure_vs_http(vs, work):
    """Parts 1-3 in one run: gunicorn (3 sync workers), one daphne process and a Celery worker
    with beat, on one database, one after the other in that order of parts."""
    from django.conf import settings

    started = time.monotonic()
    fresh_database()
    from django.contrib.auth.hashers import make_password

    from users.models import User

    users = {
        "http_off": log_in_users("httpoff", vs["offline_clients"]),
        "ws_off": log_in_users("wsoff", vs["offline_clients"]),
        "staff_list": log_in_users("stafflist", 1, staff=True)[0][1],
        "staff_ws": log_in_users("staffws", 1, staff=True)[0][1],
        "staff_feed": [token for _, token in log_in_users("stafffeed", vs["feed_pollers"], staff=True)],
    }
    password = make_password(CHURN_PASSWORD)  # one hash for all: setup in a second, logins as real
    User.objects.bulk_create([User(username=f"churn{i:03d}", password=password) for i in range(vs["churn_users"])])
    users["churn"] = list(User.objects.filter(username__startswith="churn").values_list("pk", "username"))
    from django.db import connection

    connection.close()
    print(f"users ready in {time.monotonic() - started:.1f} s", flush=True)
    result = {
        "settings": {name: getattr(settings, name) for name in VS_SETTINGS["full"]},
        "scale": {k: list(v) if isinstance(v, tuple) else v for k, v in vs.items()},
        "started_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_at_start": os.getloadavg(),
    }
    worker = gunicorn = daphne = None
    try:
        gunicorn = Server("gunicorn", work)
        daphne = Server("daphne", work)
        worker = Worker(work)
        print("gunicorn, daphne and celery worker --beat up; parts 1 and 2", flush=True)
        part12 = asyncio.run(with_threads(offline_and_push(vs, users, gunicorn, daphne)))
        part12["sweeps"] = worker.sweeps()
        result.update(part12)
        print(json.dumps({k: v for k, v in part12.items() if k != "raw"}, indent=1, default=str), flush=True)

        print("part 3: sockets held by one daphne process", flush=True)
        tokens = bulk_sessions("wscap", vs["capacity_sockets"])
        connection.close()
        result["ws_capacity"] = asyncio.run(with_threads(hold_sockets(vs, tokens, daphne)))
        print(json.dumps(result["ws_capacity"], indent=1, default=str), flush=True)
        # The closed sockets' sessions end after the grace period; HTTP is measured after that.
        closed = time.monotonic()
        while live_sessions("wscap") and time.monotonic() - closed < 180:
            time.sleep(1.0)
        result["ws_capacity"]["sessions_live_after_close"] = live_sessions("wscap")
        result["ws_capacity"]["seconds_until_sessions_ended"] = time.monotonic() - closed
        connection.close()
        daphne.stop()
        held = result["ws_capacity"]["held"] or vs["capacity_sockets"]
        levels = sorted({max(1, round(share * held)) for share in vs["http_levels"]})
        print(f"part 3: HTTP clients held by gunicorn, levels {levels}", flush=True)
        # Fresh users with live sessions, as the sockets had (not the sockets' sessions, which ended).
        http_tokens = bulk_sessions("httpcap", max(levels))
        connection.close()
        result["http_capacity"] = hold_http_clients(vs, http_tokens, gunicorn, levels, work)
    finally:
        for process in (worker, daphne, gunicorn):
            if process is not None:
                process.stop()
    result["wall_seconds"] = time.monotonic() - started
    result["finished_utc"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result["load_average_at_end"] = os.getloadavg()
    return result


async def with_threads(coroutine):
    """Blocking HTTP and database calls go to threads: enough of them that none waits for one."""
    from concurrent.futures import ThreadPoolExecutor

    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(128))
    return await coroutine


def ratio_text(ours, base, *, fmt="{:.1f}x"):
    if not ours or not base or ours != ours or base != base:
        return "n/a"
    return fmt.format(base / ours)


def vs_report(r, quick):
    off, push, wc, hc = r["offline"], r["push"], r["ws_capacity"], r["http_capacity"]
    s, sc, err = r["settings"], r["scale"], r["errors"]
    cores = os.cpu_count()
    flag = " --quick" if quick else ""

    def pp(p, unit=seconds):
        return f"{unit(p['p50'])} / {unit(p['p99'])}"

    def x(ws, http):
        return f"{ratio_text(ws['p50'], http['p50'])} / {ratio_text(ws['p99'], http['p99'])}"

    runs = hc["runs"]
    best = next((run for run in reversed(runs) if run["passed"]), None)
    failed = next((run for run in runs if not run["passed"]), None)
    run_texts = [
        f"{run['clients']:,} clients: p50 {run['p50_ms']:.1f} ms, p99 {run['p99_ms']:.1f} ms, {run['errors']} errors, "
        f"{run['rps']:.0f} req/s, gunicorn CPU {run['server_cpu_share']:.0%}, RSS {run['server_rss_mb']:.0f} MiB, "
        f"load generator CPU {run['generator_cpu_share']:.0%} ({'held' if run['passed'] else 'not held'})"
        for run in runs
    ]
    held_http = hc["held"]
    http_held_cell = f"{held_http:,} clients held (p99 < {HELD_P99 * 1000:.0f} ms, no errors)"
    if failed:
        http_held_cell += f"; {failed['clients']:,} not held (p99 {failed['p99_ms']:.0f} ms, {failed['errors']} errors)"
    capped = wc["held"] == wc["tried"]  # every socket tried stayed open: the cap of the run, not a limit found
    held_ratio = f"{'>= ' if capped else ''}{wc['held'] / held_http:.1f}x as many connections" if held_http else "n/a"
    ping_verdict = "under" if wc["hold_pong"]["p99"] < HELD_P99 else "over"
    if best:
        http_latency = (
            f"heartbeat/read due -> answered {best['p50_ms']:.1f} ms / {best['p99_ms']:.1f} ms at {best['clients']:,}"
        )
        http_memory = (
            f"no per-client state: gunicorn RSS {best['server_rss_mb']:.0f} MiB at {best['clients']:,} clients"
        )
        http_cpu = (
            f"gunicorn {best['server_cpu_share']:.0%}; generator (`bench/load.py`) {best['generator_cpu_share']:.0%}, "
            f"at {best['clients']:,} clients"
        )
    else:
        http_latency = http_memory = http_cpu = "no level held"
    settings_text = (
        f"`PRESENCE_INACTIVITY_TIMEOUT` {s['PRESENCE_INACTIVITY_TIMEOUT']}, `PRESENCE_HEARTBEAT_INTERVAL` "
        f"{s['PRESENCE_HEARTBEAT_INTERVAL']}, `PRESENCE_SWEEP_INTERVAL` {s['PRESENCE_SWEEP_INTERVAL']}, "
        f"`PRESENCE_DISCONNECT_GRACE` {s['PRESENCE_DISCONNECT_GRACE']:g}, `PRESENCE_PUSH_INTERVAL` "
        f"{s['PRESENCE_PUSH_INTERVAL']:g}, `DASHBOARD_POLL_INTERVAL` {s['DASHBOARD_POLL_INTERVAL']} (seconds)"
    )
    if quick:
        settings_text += (
            ": **shortened for --quick; its figures show that the parts work and are not comparable with production**."
        )
    else:
        settings_text += ": production's defaults."
    lines = [
        "# Presence: WebSocket vs HTTP",
        "",
        f"Generated by `bench/ws.py{flag}`: one run, {r['started_utc']} to {r['finished_utc']} "
        f"({r['wall_seconds'] / 60:.1f} min). Every figure and its HTTP baseline were measured in that run, on the "
        "same processes: gunicorn (3 sync workers) for REST, one daphne process for `/ws/presence/`, "
        "`celery -A offchat_backend worker --beat` sweeping, one PostgreSQL database and Redis. Settings: "
        + settings_text,
        "",
        "| figure | WebSocket | HTTP, same run | HTTP / WebSocket |",
        "|---|---|---|---|",
        "| 1. client gone -> shown offline by `GET /api/users/all-users/` (staff), p50 / p99 "
        f"| {pp(off['ws_shown'])} (socket closed; n={off['ws_shown']['n']}) "
        f"| {pp(off['http_shown'])} (heartbeats stop; n={off['http_shown']['n']}) "
        f"| {x(off['ws_shown'], off['http_shown'])} |",
        "| 1. client gone -> stored status offline (the `users` row), p50 / p99 "
        f"| {pp(off['ws_stored'])} (the grace period) | {pp(off['http_stored'])} (the sweep) "
        f"| {x(off['ws_stored'], off['http_stored'])} |",
        "| 2. change (REST login/logout on gunicorn) -> seen by staff, p50 / p99 "
        f"| {pp(push['socket'], ms)} (staff socket on daphne; n={push['socket']['n']}) "
        f"| {pp(push['feed'], ms)} (`?since=` poll every {s['DASHBOARD_POLL_INTERVAL']} s; {push['feed']['pollers']} "
        f"pollers x {push['changes']} changes, n={push['feed']['n']}) | {x(push['socket'], push['feed'])} |",
        f"| 3. clients held on this machine, {wc['hold_seconds']:g} s each "
        f"| {wc['held']:,} sockets held open by one daphne process, none closed (of {wc['tried']:,} tried"
        + (", the run's cap" if capped else f"; opening stops at {wc['ramp_limit']:g} s")
        + f"); ping p99 {ping_verdict} HTTP's {HELD_P99 * 1000:.0f} ms criterion, see below "
        f"| {http_held_cell}, gunicorn 3 workers | {held_ratio} |",
        "| 3. latency at that level, p50 / p99 "
        f"| ping -> pong {pp(wc['hold_pong'], ms)} (a ping per {wc['ping_period']:g} s per socket) "
        f"| {http_latency} (a heartbeat per 30 s, a read per 60 s per client) | |",
        "| 3. connects/s while opening; memory "
        f"| {wc['connects_per_second']:.0f}/s ({wc['opened']:,} in {wc['ramp_seconds']:.0f} s, {OPEN_CONCURRENCY} at "
        f"once); RSS {wc['rss_per_socket_kb']:.1f} KiB per socket ({wc['rss_before_mb']:.0f} -> "
        f"{wc['rss_after_mb']:.0f} MiB) | {http_memory} | |",
        f"| 3. CPU share (of {cores} cores): server; load generator "
        f"| daphne {wc['hold_server_cpu_share']:.0%} holding, {wc['ramp_server_cpu_share']:.0%} opening; generator "
        f"{wc['hold_generator_cpu_share']:.0%} holding, {wc['ramp_generator_cpu_share']:.0%} opening | {http_cpu} | |",
        "| errors, 1-2: sockets not opened / closed early; heartbeats failed; users shown offline while connected; "
        "never offline (shown, stored); churn requests failed; changes never seen "
        f"| {err['ws_open']} / {err['ws_closed_early']}; -; {off['shown_offline_while_connected']} (both transports); "
        f"{off['ws_shown']['missing']}, {off['ws_stored']['missing']}; {err['churn']}; {push['socket']['missing']} "
        f"| -; {err['heartbeat']}; -; {off['http_shown']['missing']}, {off['http_stored']['missing']}; -; "
        f"{push['feed']['missing']} (poller x change pairs) | |",
        f"| errors, 2: the staff socket closed before the end | {err['staff_socket_closed']} | | |",
        f"| errors, 3: sockets not opened, closed early; HTTP errors | {wc['errors']['open']}, "
        f"{wc['errors']['closed_early']} | {', '.join(str(run['errors']) for run in runs)} | |",
        "",
        "## How",
        "",
        f"- Machine: {cores} cores ({platform.machine()}), Python {platform.python_version()}; the servers, "
        "PostgreSQL, Redis, the worker and the load generator share it: compare within a row. Load average "
        f"(1, 5, 15 min) at the start {', '.join(f'{v:.1f}' for v in r['load_average_at_start'])}, at the end "
        f"{', '.join(f'{v:.1f}' for v in r['load_average_at_end'])}.",
        f"- Part 1: {sc['offline_clients']} clients per transport, each a distinct user logged in with `auth.log_in`. "
        "HTTP clients heartbeat (`POST /api/users/heartbeat/` through gunicorn) every heartbeat interval from a random "
        "phase, as the frontend does; socket clients hold `/ws/presence/` on daphne and ping at the same period. Each "
        f"client disappears {sc['stop_after']:g} s + U(0, heartbeat interval) after the start, spread over the "
        "heartbeat phase: the HTTP client stops sending, the socket client closes its socket. One staff poller reads "
        f"`GET /api/users/all-users/` (gunicorn) every {sc['list_poll']:g} s (the status shown, computed at read "
        "time); a database poll every 0.25 s reads the stored `online_status`. Times run from the disappearance "
        f"to the first answer that shows offline. Sweeps the worker logged during the run: {r['sweeps']}.",
        f"- Part 2, at the same time: {sc['churners']} REST clients log {sc['churn_users']} churn users in and out "
        f"through gunicorn (in, then out, {sc['churn_hold'][0]:g}-{sc['churn_hold'][1]:g} s each: longer than a poll) "
        f"for {sc['churn_seconds']:g} s. From the REST answer (the change is committed by then) to the first "
        "`user_status_change` of that user in that status on a staff socket, and to the first `?since=<cursor>` answer "
        f"showing it, for each of {push['feed']['pollers']} staff pollers at random phases (each loads the full list "
        "first and then polls with its cursor, as the dashboard does).",
        f"- Part 3: {wc['tried']:,} more users with a live session each (written in bulk). Sockets open "
        f"{OPEN_CONCURRENCY} at a time until all are open or {wc['ramp_limit']:g} s pass, each pinging every "
        f"{wc['ping_period']:g} s from its opening; all are then held {wc['hold_seconds']:g} s, and the ping round "
        "trips of that window are the latency figure; RSS of the daphne process before opening and 2 s after. Then "
        f"the sockets close ({wc.get('sessions_live_after_close', '?')} of their sessions still live "
        f"{wc.get('seconds_until_sessions_ended', float('nan')):.0f} s later, grace included), daphne stops, and "
        "`bench/load.py` (bench/bench.py's capacity clients) "
        "runs against the same gunicorn, on as many other users with a live session each, for the same "
        f"{wc['hold_seconds']:g} s per level, "
        "from the smallest level up to the first not held (when the smallest is not held: halving, at most twice; "
        "bench.py's criterion: p99 < 100 ms, no errors). Users of both are marked online with their session "
        "written, as bench.py mints its clients. Levels: " + "; ".join(run_texts) + ".",
        f"- Load generator (one asyncio process) in parts 1-2: {r['generator_cpu_share']:.0%} of {cores} cores; "
        f"gunicorn + daphne: {r['servers_cpu_share']:.0%}.",
        "",
        "Raw figures (`ws_vs_http.json`) and the processes' logs: the temporary folder the run names at its end.",
        "",
    ]
    return "\n".join(lines)


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
    parser.add_argument("--sockets", type=int, help="part 3's sockets (default 5,000; --quick 200)")
    parser.add_argument(
        "--servers",
        default="",
        help="instead of WebSocket vs HTTP, the server comparison (e.g. daphne,uvicorn): its table goes to the "
        "run's temporary folder (WS_SERVERS.md) and to the output, not to WS_REPORT.md",
    )
    parser.add_argument("--output", type=Path, default=REPO / "bench")
    parser.add_argument("--report-only", action="store_true", help="rewrite WS_REPORT.md from --results")
    parser.add_argument("--results", type=Path, help="a ws_vs_http.json an earlier run wrote")
    capacity_options = parser.add_argument_group(
        "part 3 alone (issue 14's capacity row): prints JSON, one object per count, to stdout"
    )
    capacity_options.add_argument("--capacity", metavar="N[,N...]", help="socket counts, e.g. 5000,20000")
    capacity_options.add_argument("--hold-seconds", type=float, help="default 180")
    capacity_options.add_argument("--generators", type=int, help="load generator processes (default 2)")
    capacity_options.add_argument("--ramp-limit", type=float, help="seconds to open the sockets (default 900)")
    capacity_options.add_argument("--staff-sockets", type=int, help="default 10")
    capacity_options.add_argument("--open-concurrency", type=int, help="sockets opening at once (default 50)")
    capacity_options.add_argument("--server", default="daphne", choices=["daphne", "uvicorn"])
    capacity_options.add_argument(
        "--processes", type=int, default=1, help="server processes sharing the sockets (default 1)"
    )
    capacity_options.add_argument(
        "--server-args", default="", help="extra server flags, e.g. '--ping-interval 300' (shell-quoted)"
    )
    capacity_options.add_argument(
        "--server-env", action="append", default=[], type=lambda kv: tuple(kv.split("=", 1)), metavar="KEY=VALUE"
    )
    capacity_options.add_argument(
        "--py-spy", action="store_true", help="profile the server over the hold (speedscope file in the work folder)"
    )
    parser.add_argument("--capacity-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.capacity_worker:
        capacity_worker(args.capacity_worker)
        return
    if args.capacity:
        import shlex
        import tempfile

        args.server_args = shlex.split(args.server_args)
        work = Path(tempfile.mkdtemp(prefix="offchat-ws-capacity-"))
        results = capacity(args, work)
        print(json.dumps(results if len(results) > 1 else results[0], indent=1, default=str))
        print(f"raw figures and the processes' logs: {work}", file=sys.stderr)
        return
    if args.report_only:
        import django

        django.setup()
        results = json.loads(args.results.read_text())
        write_report(args.output, results, quick=results.get("quick", False))
        return
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="offchat-ws-bench-"))  # the processes' logs and the raw figures
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = time.monotonic()
    if args.servers:
        compare_servers(args, work)
    else:
        vs = dict(VS_QUICK if args.quick else VS_FULL)
        if args.sockets:
            vs["capacity_sockets"] = args.sockets
        assert hard > vs["capacity_sockets"] + 1000, f"open files limit {hard} is too low"
        os.environ.update(VS_SETTINGS["quick" if args.quick else "full"], LOCAL_STATE_DIR=str(work))
        results = measure_vs_http(vs, work)
        results["quick"] = args.quick
        (work / "ws_vs_http.json").write_text(json.dumps(results, indent=1, default=str))
        args.output.mkdir(parents=True, exist_ok=True)
        print(write_report(args.output, results, quick=args.quick))
        print(f"raw figures and the processes' logs: {work}")
    print(f"done in {time.monotonic() - started:.0f} s")


def compare_servers(args, work):
    """The server comparison (daphne vs uvicorn) that chose daphne: see the reading in WS_REPORT.md."""
    scale = dict(QUICK if args.quick else FULL)
    if args.sockets:
        scale["sockets"] = args.sockets
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard > scale["sockets"] + 500, f"open files limit {hard} is too low for {scale['sockets']} sockets"
    fresh_database()
    users = make_users(scale)
    results = {"gunicorn": measure_gunicorn(scale, users, work)}
    for name in args.servers.split(","):
        results[name] = asyncio.run(measure_server(name, scale, users, work))
        print(json.dumps(results[name], indent=1, default=str), flush=True)
    results["scale"], results["users"] = scale, {"mint_seconds": users["mint_seconds"]}
    (work / "ws_results.json").write_text(json.dumps(results, indent=1, default=str))
    text = report(results, scale, users, scale["sockets"] == QUICK["sockets"] and scale["ping_period"] < 30)
    (work / "WS_SERVERS.md").write_text(text)
    print(text)
    print(f"raw figures, the table (WS_SERVERS.md) and the servers' logs: {work}")


# --- Part 3 alone, at given socket counts: issue 14's capacity row (--capacity N[,N...]) -------------
# Clients ping every 30 s; 1% of the socket users change state a minute; 10 staff sockets must receive
# every change; held 180 s. The sockets are held by generator processes of their own (sans-I/O
# websockets clients on raw asyncio transports, no task per socket), so that one Python process is
# not the bottleneck; this process makes the changes, holds the staff sockets and measures.
CAPACITY = {
    "hold_seconds": 180.0,
    "ping_period": 30.0,
    "change_share_per_minute": 0.01,
    "staff_sockets": 10,
    "generators": 2,
    "open_concurrency": 50,  # sockets being opened at once, over all generators
    "ramp_limit": 900.0,
    "delivery_wait": 3.0,  # after the hold, for the last changes' pushes
}
# Production's presence defaults, but PRESENCE_AWAY_AFTER: every socket user is made online at the
# same instant, so with production's 300 s all of them would turn away together (the clock's
# transition) in the middle of a 20,000-socket ramp: one change of every user, not 1% a minute.
CAPACITY_SETTINGS = {**VS_SETTINGS["full"], "PRESENCE_WRITE_GRANULARITY": "25", "PRESENCE_AWAY_AFTER": "86400"}
CAPACITY_APP = "bench.ws:counted_application"  # the production application plus /bench/stats (below)


def __getattr__(name):
    """`bench.ws:counted_application`, built only when a server imports it."""
    if name == "counted_application":
        globals()[name] = _counted_application()
        return globals()[name]
    raise AttributeError(name)


def _counted_application():
    """offchat_backend.asgi's application, plus what the capacity run reads from the server at
    GET /bench/stats: the database statements it ran (by kind and table; every connection of every
    thread), its garbage collections (count and pause per generation) and its event loop's lag
    (moments the loop was late by more than 20 ms). Nothing else changes."""
    import gc
    import re

    from django.db.backends.signals import connection_created

    from offchat_backend.asgi import application

    stats = {
        "statements": Counter(),
        "gc": Counter(),
        "gc_seconds": Counter(),
        "gc_cpu_seconds": Counter(),
        "gc_collected": Counter(),
        "gc_pauses": [],
        "lag": [],
    }
    lock = threading.Lock()
    table = re.compile(r'\b(?:FROM|UPDATE|INTO)\s+"?([a-z_0-9]+)', re.IGNORECASE)

    def count(execute, sql, params, many, context):
        found = table.search(sql)
        key = f"{sql.split(None, 1)[0].upper()} {found.group(1) if found else ''}".strip()
        with lock:
            stats["statements"][key] += 1
        return execute(sql, params, many, context)

    def on_connection(sender, connection, **kwargs):
        if count not in connection.execute_wrappers:
            connection.execute_wrappers.append(count)

    connection_created.connect(on_connection, weak=False)
    gc_started = [0.0, 0.0]

    def on_gc(phase, info):
        if phase == "start":
            gc_started[:] = [time.perf_counter(), time.thread_time()]
            return
        pause = time.perf_counter() - gc_started[0]
        cpu = time.thread_time() - gc_started[1]
        stats["gc_cpu_seconds"][str(info["generation"])] += cpu
        generation = str(info["generation"])
        stats["gc"][generation] += 1
        stats["gc_seconds"][generation] += pause
        stats["gc_collected"][generation] += info["collected"]
        if pause > 0.005:
            stats["gc_pauses"] = [*stats["gc_pauses"][-4999:], [time.monotonic(), info["generation"], pause, cpu]]

    gc.callbacks.append(on_gc)
    monitor = []

    async def watch_lag():
        # Late wakes of the loop, with the CPU time the loop's thread used meanwhile: a wake late
        # with little CPU used was waiting for a CPU (the machine's other load), not for this process.
        while True:
            before, cpu = time.monotonic(), time.thread_time()
            await asyncio.sleep(0.01)
            late = time.monotonic() - before - 0.01
            if late > 0.02:
                stats["lag"] = [*stats["lag"][-9999:], [before, late, time.thread_time() - cpu]]

    async def counted(scope, receive, send):
        if not monitor:
            monitor.append(asyncio.get_running_loop().create_task(watch_lag()))
        if scope["type"] == "http" and scope["path"] == "/bench/stats":
            await receive()
            objects = {}
            if b"objects" in scope.get("query_string", b""):
                # Objects the collector tracks (what a full collection visits), by type: slow.
                tracked = gc.get_objects()
                by_type = Counter(type(o).__qualname__ for o in tracked)
                objects = {"tracked": len(tracked), "by_type": dict(by_type.most_common(60))}
                del tracked
            body = json.dumps(
                {
                    "objects": objects,
                    "statements": dict(stats["statements"]),
                    "gc": dict(stats["gc"]),
                    "gc_seconds": dict(stats["gc_seconds"]),
                    "gc_cpu_seconds": dict(stats["gc_cpu_seconds"]),
                    "gc_collected": dict(stats["gc_collected"]),
                    "gc_counts": gc.get_count(),
                    "gc_pauses": stats["gc_pauses"],
                    "gc_threshold": gc.get_threshold(),
                    "gc_frozen": gc.get_freeze_count(),
                    "lag": stats["lag"],
                }
            ).encode()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": body})
            return
        await application(scope, receive, send)

    return counted


def raise_open_files(needed):
    """Enough file descriptors for `needed` sockets and then some (root may raise the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + 4096
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def proc_cpu_seconds(pid):
    ticks = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / ticks


def busy_processes():
    """CPU seconds of every process on the machine: {pid: (command, seconds)}."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            found[int(entry.name)] = (command[:120], proc_cpu_seconds(entry.name))
    return found


def others_busy(before, after, wall, mine):
    """The processes (not this run's) that used the most CPU between two busy_processes()."""
    cores = os.cpu_count()
    rows = [
        (after[pid][1] - before[pid][1], after[pid][0])
        for pid in after
        if pid in before and pid not in mine and after[pid][1] > before[pid][1]
    ]
    rows.sort(reverse=True)
    return {
        "cpu_share_total": sum(seconds for seconds, _ in rows) / wall / cores,
        "top": [[round(seconds / wall / cores, 3), command] for seconds, command in rows[:8]],
    }


# The generator: `bench/ws.py --capacity-worker CONFIG` (run by capacity_level, one per generator).
class PresenceClient(asyncio.Protocol):
    """One socket: the websockets sans-I/O protocol on an asyncio transport; pongs timed as they
    arrive, with no task per socket."""

    __slots__ = ("worker", "ws", "transport", "opened", "ping_sent", "open", "closing_code")

    def __init__(self, worker, token):
        from websockets.client import ClientProtocol
        from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
        from websockets.uri import parse_uri

        self.worker = worker
        # permessage-deflate offered, as browsers do (daphne declines it).
        self.ws = ClientProtocol(
            parse_uri(f"ws://127.0.0.1:{worker.port}/ws/presence/?token={token}"),
            extensions=enable_client_permessage_deflate(None),
        )
        self.transport = None
        self.opened = asyncio.get_running_loop().create_future()
        self.ping_sent = None
        self.open = False
        self.closing_code = None

    def connection_made(self, transport):
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self.flush()

    def data_received(self, data):
        from websockets.frames import Opcode

        now = time.monotonic()
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if getattr(event, "opcode", None) is not Opcode.TEXT:
                continue
            if b'"pong"' in event.data and self.ping_sent is not None:
                self.worker.pongs.append((now, now - self.ping_sent))
                self.ping_sent = None
            elif b'"hello"' in event.data and not self.opened.done():
                self.open = True
                self.opened.set_result(None)
            else:
                self.worker.frames += 1
        self.flush()

    def flush(self):
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()
        if self.ws.close_expected() and self.ws.close_code is not None:
            self.closing_code = self.ws.close_code

    def ping(self):
        self.ping_sent = time.monotonic()
        self.ws.send_text(b'{"type":"ping"}')
        self.flush()

    def close(self):
        if self.open and self.transport and not self.transport.is_closing():
            self.ws.send_close(1000)
            self.flush()

    def connection_lost(self, exc):
        was_open, self.open = self.open, False
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(str(exc or "closed before hello")))
        if was_open and not self.worker.stopping:
            self.worker.closed_early.append((time.monotonic(), self.ws.close_code))
        self.worker.lost += 1


class CapacityWorker:
    def __init__(self, config):
        self.port = config["port"]
        self.config = config
        self.pongs, self.closed_early, self.lag = [], [], []
        self.frames = self.lost = 0
        self.stopping = False
        self.unanswered = 0

    async def run(self):
        import gc
        import heapq

        config, loop = self.config, asyncio.get_running_loop()
        tokens = Path(config["tokens"]).read_text().split()
        rng = random.Random(config["seed"])
        period = config["ping_period"]
        clients, due = [], []
        errors = {"open": 0}
        stop = asyncio.Event()
        threading.Thread(
            target=lambda: (sys.stdin.readline(), loop.call_soon_threadsafe(stop.set)), daemon=True
        ).start()
        gate = asyncio.Semaphore(config["open_concurrency"])
        deadline = time.monotonic() + config["ramp_limit"]
        sources = itertools.count(config["seed"])
        report_every = 500

        def progress(done=False):
            print(json.dumps({"opened": len(clients), "open_errors": errors["open"], "done": done}), flush=True)

        async def open_one(token):
            async with gate:
                if time.monotonic() > deadline or stop.is_set():
                    errors["open"] += 1
                    return
                client = PresenceClient(self, token)
                # Source addresses 127.0.0.2-9 in turn: each has its own ephemeral ports.
                source = (f"127.0.0.{2 + next(sources) % 8}", 0)
                try:
                    await loop.create_connection(lambda: client, "127.0.0.1", self.port, local_addr=source)
                    await asyncio.wait_for(asyncio.shield(client.opened), timeout=60)
                except Exception:  # noqa: BLE001
                    errors["open"] += 1
                    if client.transport:
                        client.transport.abort()
                    return
                clients.append(client)
                heapq.heappush(due, (time.monotonic() + rng.uniform(0, period), len(clients) - 1))
                if len(clients) % report_every == 0:
                    progress()

        async def pinger():
            while not stop.is_set():
                now = time.monotonic()
                while due and due[0][0] <= now:
                    at, index = heapq.heappop(due)
                    client = clients[index]
                    if not client.open:
                        continue
                    if client.ping_sent is None:
                        client.ping()
                    else:
                        self.unanswered += 1  # no pong for a whole period
                    heapq.heappush(due, (at + period, index))
                await asyncio.sleep(0.01)

        async def watch_lag():
            while not stop.is_set():
                before = time.monotonic()
                await asyncio.sleep(0.01)
                late = time.monotonic() - before - 0.01
                if late > 0.02:
                    self.lag.append((before, late))

        pinging = loop.create_task(pinger())
        watching = loop.create_task(watch_lag())
        await asyncio.gather(*(open_one(token) for token in tokens))
        gc.collect()
        gc.freeze()  # the generator's own collections must not stall its clock
        progress(done=True)
        await stop.wait()
        self.stopping = True
        await asyncio.gather(pinging, watching)
        outstanding = sum(1 for c in clients if c.open and c.ping_sent is not None)
        Path(config["result"]).write_text(
            json.dumps(
                {
                    "pongs": self.pongs,
                    "closed_early": self.closed_early,
                    "open_errors": errors["open"],
                    "opened": len(clients),
                    "unanswered": self.unanswered,
                    "outstanding_at_stop": outstanding,
                    "frames": self.frames,
                    "lag": self.lag,
                }
            )
        )
        for start in range(0, len(clients), 500):
            for client in clients[start : start + 500]:
                client.close()
            await asyncio.sleep(0.05)
        end = time.monotonic() + 30
        while self.lost < len(clients) and time.monotonic() < end:
            await asyncio.sleep(0.2)
        for client in clients:
            if client.transport and not client.transport.is_closing():
                client.transport.abort()


def capacity_worker(config_path):
    config = json.loads(Path(config_path).read_text())
    raise_open_files(len(Path(config["tokens"]).read_text().split()))
    asyncio.run(CapacityWorker(config).run())


def cpu_pressure_waiting():
    """Seconds, since boot, that some runnable task waited for a CPU (/proc/pressure/cpu)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None
    return int(line.rsplit("total=", 1)[1]) / 1e6


def pg_database_stats():
    """This run's database, as PostgreSQL counts it (pg_stat_database; the statistics collector
    lags by up to half a second)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted, tup_updated, tup_deleted "
            "FROM pg_stat_database WHERE datname = current_database()"
        )
        names = [
            "xact_commit",
            "xact_rollback",
            "tup_returned",
            "tup_fetched",
            "tup_inserted",
            "tup_updated",
            "tup_deleted",
        ]
        row = dict(zip(names, cursor.fetchone(), strict=True))
    connection.close()
    return row


def keep_connected(prefix):
    """The socket users whose socket is not open yet stay connected meanwhile, as their HTTP
    clients would keep them (last_seen now; no feed id, no status change): made online together at
    the start, they would otherwise all time out together (PRESENCE_INACTIVITY_TIMEOUT) in the
    middle of a ramp longer than it, one clock transition of thousands of users."""
    from django.db import connection, transaction
    from django.db.models import Q
    from django.utils import timezone

    from users.models import PresenceSession, User

    now = timezone.now()
    # The socket processes touch these rows too, in their own order: rows one of them holds
    # are skipped (it is making them fresh itself), so that the two never deadlock; a deadlock
    # here ended a 50,000-socket run.
    for model, stale in (
        (User, Q(username__startswith=prefix, last_seen__lt=now)),
        (PresenceSession, Q(user__username__startswith=prefix, ended_at__isnull=True, last_seen__lt=now)),
    ):
        with transaction.atomic():
            free = model.objects.filter(stale).select_for_update(skip_locked=True, of=("self",)).values("pk")
            model.objects.filter(pk__in=free).update(last_seen=now)
    connection.close()


def server_stats(port, *, objects=False):
    failure = None
    for _ in range(3):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=180)
        try:
            connection.request("GET", "/bench/stats" + ("?objects=1" if objects else ""))
            response = connection.getresponse()
            body = response.read()
            assert response.status == 200, (response.status, body[:200])
            return json.loads(body)
        except OSError as error:
            failure = error
            time.sleep(2)
        finally:
            connection.close()
    raise AssertionError(f"/bench/stats: {failure!r}")


def count_diff(after, before):
    return {key: value - before.get(key, 0) for key, value in after.items() if value - before.get(key, 0)}


def prepare_capacity(n, cap):
    """A fresh database with n socket users (a live session and a token each), the staff users, and
    the users who will change state in the hold (their sessions loaded)."""
    from django.db import connection

    from users.models import PresenceSession

    fresh_database()
    started = time.monotonic()
    tokens = bulk_sessions("cap", n)
    staff_tokens = [token for _, token in log_in_users("capstaff", cap["staff_sockets"], staff=True)]
    planned = round(n * cap["change_share_per_minute"] * cap["hold_seconds"] / 60)
    changed_users = random.Random(n).sample([uid for uid, _ in tokens], min(n, planned))
    sessions = {s.user_id: s for s in PresenceSession.objects.select_related("user").filter(user_id__in=changed_users)}
    with connection.cursor() as cursor:  # statistics for the planner, as autovacuum keeps them in production
        cursor.execute("ANALYZE")
    connection.close()
    return {
        "tokens": tokens,
        "staff_tokens": staff_tokens,
        "changed_users": changed_users,
        "sessions": sessions,
        "planned": planned,
        "setup_seconds": time.monotonic() - started,
    }


async def objects_of(server):
    """The first server's tracked objects by type ({} when it does not answer in time)."""
    try:
        return (await asyncio.to_thread(server_stats, server.ports[0], objects=True))["objects"]
    except AssertionError:
        return {}


class Servers:
    """`count` ASGI server processes on ports of their own (one process holds at most what its
    open files limit allows: 20,000 on the machine of bench/WS_CAPACITY.md), seen as one."""

    def __init__(self, count, name, work, **kwargs):
        self.members = []
        try:
            for k in range(count):
                self.members.append(Server(name, work, **kwargs))
                if count > 1:  # each its own log
                    os.replace(self.members[-1].log.name, work / f"ws-bench-{name}-{k}.log")
        except BaseException:
            self.stop()
            raise
        self.ports = [member.port for member in self.members]
        self.command = self.members[0].command
        self.process = self.members[0].process

    def rss_bytes(self):
        return sum(member.rss_bytes() for member in self.members)

    def cpu_seconds(self):
        return sum(member.cpu_seconds() for member in self.members)

    def pids(self):
        return [pid for member in self.members for pid in member.pids()]

    def stats(self):
        """/bench/stats of every process: counters summed, timelines joined."""
        merged = {}
        for port in self.ports:
            one = server_stats(port)
            for key, value in one.items():
                if isinstance(value, dict):
                    merged.setdefault(key, Counter()).update(value)
                elif isinstance(value, list) and key in ("gc_pauses", "lag"):
                    merged.setdefault(key, []).extend(value)
                else:
                    merged.setdefault(key, value)
        return {key: dict(value) if isinstance(value, Counter) else value for key, value in merged.items()}

    def stop(self):
        for member in self.members:
            member.stop()


async def capacity_level(n, cap, work, args, prepared):
    """One count: n sockets opened by the generators, held cap["hold_seconds"] while 1% of their users
    change state a minute and cap["staff_sockets"] staff sockets receive every change."""
    from websockets.asyncio.client import connect

    from users.services import presence

    tokens, staff_tokens = prepared["tokens"], prepared["staff_tokens"]
    setup_seconds = prepared["setup_seconds"]
    server = Servers(
        args.processes, args.server, work, app=CAPACITY_APP, extra=args.server_args, env=dict(args.server_env)
    )
    result = {
        "sockets": n,
        "server": args.server,
        "server_command": " ".join(server.command[1:]),
        "server_processes": args.processes,
        "server_env": dict(args.server_env),
        "settings": {name: os.environ.get(name) for name in CAPACITY_SETTINGS},
        "scale": dict(cap),
        "setup_seconds": setup_seconds,
        "load_average_at_start": os.getloadavg(),
    }
    workers, loop = [], asyncio.get_running_loop()
    try:
        # The staff sockets first (websockets' client, as part 2), each pinging every period.
        seen = [[] for _ in staff_tokens]  # per staff socket: (user id, status, when)
        staff_closed = [0]
        done = asyncio.Event()

        async def staff_socket(index, token):
            port = server.ports[index % len(server.ports)]
            socket = await connect(f"ws://127.0.0.1:{port}/ws/presence/?token={token}", ping_interval=None)
            assert json.loads(await socket.recv())["type"] == "hello"

            async def pinger():
                while not done.is_set():
                    try:
                        await asyncio.wait_for(done.wait(), timeout=cap["ping_period"])
                    except TimeoutError:
                        await socket.send('{"type":"ping"}')

            async def reader():
                try:
                    async for raw in socket:
                        if '"user_status_change"' in raw:
                            frame = json.loads(raw)
                            seen[index].append((int(frame["user_id"]), frame["online_status"], time.monotonic()))
                except Exception:  # noqa: BLE001
                    pass
                if not done.is_set():
                    staff_closed[0] += 1

            return socket, loop.create_task(pinger()), loop.create_task(reader())

        staff = [await staff_socket(i, token) for i, token in enumerate(staff_tokens)]
        await asyncio.sleep(2.0)
        objects_before = await objects_of(server)
        rss = [(0, server.rss_bytes())]
        result["rss_before_mb"] = rss[0][1] / 2**20

        # The generators, each with its share of the sockets.
        count = max(1, min(max(cap["generators"], args.processes), n))
        shares = [tokens[k::count] for k in range(count)]
        for k, share in enumerate(shares):
            config = {
                "port": server.ports[k % len(server.ports)],
                "tokens": str(work / f"cap-tokens-{n}-{k}.txt"),
                "result": str(work / f"cap-result-{n}-{k}.json"),
                "seed": k,
                "ping_period": cap["ping_period"],
                "open_concurrency": max(1, cap["open_concurrency"] // count),
                "ramp_limit": cap["ramp_limit"],
            }
            Path(config["tokens"]).write_text("".join(f"{token}\n" for _, token in share))
            Path(config["result"] + ".config").write_text(json.dumps(config))
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.ws", "--capacity-worker", config["result"] + ".config",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=REPO,
            )  # fmt: skip
            workers.append((process, config))
        opened = [0] * count
        finished = [False] * count
        milestones = sorted({m for m in (1000, 2500, 5000, 10000, 15000, 20000, 30000, 40000) if m <= n} | {n})
        ramp_started = time.monotonic()
        cpu_ramp = {"server": server.cpu_seconds(), "generators": 0.0, "self": cpu_self()}
        cpu_ramp["generators"] = sum(proc_cpu_seconds(p.pid) for p, _ in workers)

        async def follow(k, process):
            while True:
                line = await process.stdout.readline()
                if not line:
                    finished[k] = True
                    return
                progress = json.loads(line)
                opened[k] = progress["opened"]
                if progress["done"]:
                    finished[k] = True
                    return

        followers = [loop.create_task(follow(k, p)) for k, (p, _) in enumerate(workers)]
        ramp_profile = None
        if args.py_spy:
            ramp_profile = await asyncio.create_subprocess_exec(
                str(VENV_BIN / "py-spy"), "record", "--pid", str(server.process.pid), "--rate", "50", "--nonblocking",
                "--format", "speedscope", "--output", str(work / f"py-spy-ramp-{n}.speedscope.json"),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
        kept_at = time.monotonic()
        while not all(finished):
            await asyncio.sleep(0.5)
            if time.monotonic() - kept_at > 30:
                kept_at = time.monotonic()
                await asyncio.to_thread(keep_connected, "cap")
            total = sum(opened)
            while milestones and total >= milestones[0]:
                rss.append((total, server.rss_bytes()))
                milestones.pop(0)
        await asyncio.gather(*followers)
        ramp_wall = time.monotonic() - ramp_started
        if ramp_profile is not None:
            import signal

            if ramp_profile.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    ramp_profile.send_signal(signal.SIGINT)  # py-spy writes its profile and exits
            await asyncio.wait_for(ramp_profile.wait(), timeout=120)
            result["py_spy_ramp_exit"] = ramp_profile.returncode
        result["open_seconds"] = ramp_wall
        result["opened"] = sum(opened)
        result["connects_per_second"] = sum(opened) / ramp_wall
        result["ramp_cpu_share"] = {
            "server": (server.cpu_seconds() - cpu_ramp["server"]) / ramp_wall / os.cpu_count(),
            "generators": (sum(proc_cpu_seconds(p.pid) for p, _ in workers) - cpu_ramp["generators"])
            / ramp_wall
            / os.cpu_count(),
        }
        await asyncio.sleep(5.0)  # let the last opens settle (and a touch of the new sessions pass)
        rss.append((sum(opened), server.rss_bytes()))
        objects_after = await objects_of(server)
        # The sockets of the first process (generator k opens on process k % processes).
        first_share = max(1, sum(o for k, o in enumerate(opened) if k % len(server.ports) == 0))
        result["tracked_objects"] = (
            {}
            if not (objects_before and objects_after)
            else {
                "before": objects_before["tracked"],
                "after": objects_after["tracked"],
                "per_socket": (objects_after["tracked"] - objects_before["tracked"]) / first_share,
                "per_socket_by_type": {
                    name: round((count - objects_before["by_type"].get(name, 0)) / first_share, 2)
                    for name, count in objects_after["by_type"].items()
                    if (count - objects_before["by_type"].get(name, 0)) / first_share >= 0.5
                },
            }
        )
        result["rss_after_mb"] = rss[-1][1] / 2**20
        result["rss_at"] = [[k, b / 2**20] for k, b in rss]
        result["rss_per_socket_kb"] = (rss[-1][1] - rss[0][1]) / max(1, sum(opened)) / 1024
        steps = [(k, b) for k, b in rss if k]
        result["rss_per_socket_kb_at"] = {str(k): (b - rss[0][1]) / k / 1024 for k, b in steps}

        # The hold: pings (the generators), changes (here, in threads), deliveries to staff.
        rng = random.Random(n)
        changes_planned, changed_users, sessions = prepared["planned"], prepared["changed_users"], prepared["sessions"]
        change_statements = [0]
        changes = []  # (user id, status, answered)
        change_errors = [0]

        def change(user_id):
            from django.db import connection as db

            session = sessions[user_id]

            def counted(execute, sql, params, many, context):
                change_statements[0] += 1
                return execute(sql, params, many, context)

            try:
                with db.execute_wrapper(counted):
                    wrote = presence.record_activity(
                        user=session.user, session=session, active=False, reported_status="away"
                    )
                if not wrote:
                    change_errors[0] += 1
                    return
                changes.append((user_id, "away", time.monotonic()))
            except Exception:  # noqa: BLE001
                change_errors[0] += 1

        cpu = {"server": server.cpu_seconds(), "self": cpu_self()}
        cpu["generators"] = sum(proc_cpu_seconds(p.pid) for p, _ in workers)
        others_before = busy_processes()
        pressure_before = cpu_pressure_waiting()
        pg_before = await asyncio.to_thread(pg_database_stats)
        stats_before = await asyncio.to_thread(server.stats)
        profile = None
        hold_start = time.monotonic()
        if args.py_spy:
            profile_path = work / f"py-spy-{n}.speedscope.json"
            profile = await asyncio.create_subprocess_exec(
                str(VENV_BIN / "py-spy"), "record", "--pid", str(server.process.pid), "--duration",
                str(int(cap["hold_seconds"])), "--rate", "100", "--nonblocking", "--idle", "--format", "speedscope",
                "--output", str(profile_path), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            result["py_spy_profile"] = str(profile_path)
        hold_end = hold_start + cap["hold_seconds"]
        gap = cap["hold_seconds"] / max(1, len(changed_users))
        pending = []
        for i, user_id in enumerate(changed_users):
            await sleep_until(hold_start + gap * (i + rng.random()))
            pending.append(loop.run_in_executor(None, change, user_id))
        await sleep_until(hold_end)
        hold_wall = time.monotonic() - hold_start
        cpu_after = {
            "server": server.cpu_seconds(),
            "self": cpu_self(),
            "generators": sum(proc_cpu_seconds(p.pid) for p, _ in workers),
        }
        others_after = busy_processes()
        pressure_after = cpu_pressure_waiting()
        pg_after = await asyncio.to_thread(pg_database_stats)
        stats_after = await asyncio.to_thread(server.stats)
        result["rss_end_of_hold_mb"] = server.rss_bytes() / 2**20
        await asyncio.gather(*pending)
        await asyncio.sleep(cap["delivery_wait"])
        done.set()
        for process, _ in workers:
            process.stdin.write(b"stop\n")
            await process.stdin.drain()
        if profile is not None:
            result["py_spy_exit"] = await profile.wait()
        for process, _ in workers:
            await asyncio.wait_for(process.wait(), timeout=180)
        outcomes = [json.loads(Path(config["result"]).read_text()) for _, config in workers]

        # Figures.
        cores = os.cpu_count()
        pongs = [rtt for o in outcomes for at, rtt in o["pongs"] if hold_start <= at <= hold_end]
        slow = sorted(
            at - hold_start for o in outcomes for at, rtt in o["pongs"] if hold_start <= at <= hold_end and rtt > 0.1
        )
        result["hold_seconds"] = hold_wall
        result["ping"] = {
            **percentiles(pongs),
            "p999": percentile(pongs, 99.9),
            "max": max(pongs, default=float("nan")),
            "over_100ms": len(slow),
            # When in the hold the pongs over 100 ms came, by second: do they bunch?
            "over_100ms_by_second": dict(sorted(Counter(int(at) for at in slow).items())),
        }
        latencies, missing = [], 0
        for user_id, status, answered in changes:
            for frames in seen:
                times = [t for u, s, t in frames if u == user_id and s == status and t >= answered - 1.0]
                if times:
                    latencies.append(min(times) - answered)
                else:
                    missing += 1
        result["changes"] = {
            "made": len(changes),
            "planned": changes_planned,
            "per_minute": len(changes) / hold_wall * 60,
            "failed": change_errors[0],
            "statements_per_change": change_statements[0] / max(1, len(changes)),
        }
        result["delivery"] = {
            **percentiles(latencies),
            "max": max(latencies, default=float("nan")),
            "pairs": len(changes) * len(seen),
            "missing": missing,
        }
        server_statements = count_diff(stats_after["statements"], stats_before["statements"])
        pg_delta = count_diff(pg_after, pg_before)
        result["database"] = {
            "server_statements_per_minute": sum(server_statements.values()) / hold_wall * 60,
            "server_statements_by_kind_per_minute": {
                k: round(v / hold_wall * 60, 1) for k, v in sorted(server_statements.items(), key=lambda kv: -kv[1])
            },
            "change_statements_per_minute": change_statements[0] / hold_wall * 60,
            "pg_transactions_per_minute": (pg_delta.get("xact_commit", 0) + pg_delta.get("xact_rollback", 0))
            / hold_wall
            * 60,
            "pg_rows_updated_per_minute": pg_delta.get("tup_updated", 0) / hold_wall * 60,
            "pg_rows_read_per_minute": (pg_delta.get("tup_returned", 0) + pg_delta.get("tup_fetched", 0))
            / hold_wall
            * 60,
        }
        gc_pauses = [p for p in stats_after["gc_pauses"] if hold_start <= p[0] <= hold_end]
        lag = [lg for lg in stats_after["lag"] if hold_start <= lg[0] <= hold_end]
        result["server_gc"] = {
            "collections": count_diff(stats_after["gc"], stats_before["gc"]),
            "seconds": {
                k: round(v, 3) for k, v in count_diff(stats_after["gc_seconds"], stats_before["gc_seconds"]).items()
            },
            "cpu_seconds": {
                k: round(v, 3)
                for k, v in count_diff(stats_after["gc_cpu_seconds"], stats_before["gc_cpu_seconds"]).items()
            },
            # Unreachable objects each generation's collections found (freed): cyclic garbage.
            "collected": count_diff(stats_after["gc_collected"], stats_before["gc_collected"]),
            # [seconds into the hold, generation, wall seconds, CPU seconds of the collecting thread]
            "pauses_over_5ms": [
                [round(at - hold_start, 2), gen, round(wall, 4), round(cpu, 4)] for at, gen, wall, cpu in gc_pauses
            ][:300],
            "full_collections_max_wall": max((w for _, g, w, _ in gc_pauses if g == 2), default=0.0),
            "full_collections_max_cpu": max((c for _, g, _, c in gc_pauses if g == 2), default=0.0),
            "threshold": stats_after["gc_threshold"],
            "frozen": stats_after["gc_frozen"],
        }
        result["server_loop_lag"] = {
            "over_20ms": len(lag),
            "max": max((late for _, late, _ in lag), default=0.0),
            # Stalls of the loop's own making: over 100 ms late with over 100 ms of its CPU used.
            "busy_over_100ms": sum(1 for _, late, cpu in lag if late > 0.1 and cpu > 0.1),
            "busy_max_cpu": max((cpu for _, _, cpu in lag), default=0.0),
            # [seconds into the hold, seconds late, CPU seconds the loop's thread used meanwhile]
            "worst": [
                [round(at - hold_start, 2), round(late, 3), round(cpu, 3)]
                for at, late, cpu in sorted(lag, key=lambda x: -x[1])[:20]
            ],
        }
        gen_lag = [lg for o in outcomes for lg in o["lag"] if hold_start <= lg[0] <= hold_end]
        result["generator_loop_lag"] = {"over_20ms": len(gen_lag), "max": max((lt for _, lt in gen_lag), default=0.0)}
        mine = {os.getpid(), *server.pids(), *(p.pid for p, _ in workers)}
        result["cpu_share"] = {
            "server": (cpu_after["server"] - cpu["server"]) / hold_wall / cores,
            "generators": (cpu_after["generators"] - cpu["generators"]) / hold_wall / cores,
            "this_process": (cpu_after["self"] - cpu["self"]) / hold_wall / cores,
            "others": others_busy(others_before, others_after, hold_wall, mine),
            # The share of the hold in which some runnable task waited for a CPU (PSI "some").
            "machine_cpu_pressure": (pressure_after - pressure_before) / hold_wall
            if pressure_before is not None
            else None,
        }
        result["errors"] = {
            "open": sum(o["open_errors"] for o in outcomes),
            "closed_early": sum(len(o["closed_early"]) for o in outcomes),
            "close_codes": sorted({c for o in outcomes for _, c in o["closed_early"]}, key=str),
            "pings_unanswered": sum(o["unanswered"] for o in outcomes),
            "staff_closed": staff_closed[0],
            "changes_failed": change_errors[0],
            "deliveries_missing": missing,
        }
        result["error_count"] = sum(v for k, v in result["errors"].items() if k != "close_codes" and isinstance(v, int))
        result["load_average_at_end"] = os.getloadavg()
        for socket, pinger, reader in staff:
            await socket.close()
            await asyncio.gather(pinger, reader, return_exceptions=True)
    finally:
        for process, _ in workers:
            if process.returncode is None:
                process.kill()
                await process.wait()
        server.stop()
    return result


def capacity(args, work):
    counts = [int(c) for c in args.capacity.split(",")]
    cap = dict(CAPACITY)
    for key in ("hold_seconds", "generators", "ramp_limit", "ping_period", "staff_sockets", "open_concurrency"):
        if getattr(args, key, None) is not None:
            cap[key] = getattr(args, key)
    limit = raise_open_files(max(counts) + 1000)
    # Each server process and each generator holds its share of the sockets, one descriptor
    # each, under the limit it inherits from this process (docs/realtime.md, *Descriptors*).
    busiest = max(counts) / min(args.processes, cap["generators"])
    if busiest + 1000 > limit:
        raise SystemExit(
            f"{max(counts):,} sockets over {args.processes} server processes and {cap['generators']} generators put "
            f"{busiest:,.0f} on one process, over its descriptor limit ({limit:,}, `ulimit -n`; its hard limit could "
            f"not be raised). Raise it (as root: `ulimit -Hn 65536; ulimit -n 65536`, then run this again) or give "
            f"more --processes and --generators."
        )
    os.environ.update(CAPACITY_SETTINGS, LOCAL_STATE_DIR=str(work))
    import django

    django.setup()
    results = []
    for n in counts:
        print(f"capacity: {n:,} sockets (work folder {work})", file=sys.stderr, flush=True)
        prepared = prepare_capacity(n, cap)
        results.append(asyncio.run(with_threads(capacity_level(n, cap, work, args, prepared))))
        results[-1]["open_files_limit"] = limit
        (work / "ws_capacity.json").write_text(json.dumps(results, indent=1, default=str))
        print(json.dumps(summary_of(results[-1])), file=sys.stderr, flush=True)
    return results


def summary_of(r):
    return {
        "sockets": r["sockets"],
        "opened": r["opened"],
        "ping_p50_ms": r["ping"]["p50"] * 1000,
        "ping_p99_ms": r["ping"]["p99"] * 1000,
        "delivery_p50_ms": r["delivery"]["p50"] * 1000,
        "delivery_p99_ms": r["delivery"]["p99"] * 1000,
        "rss_per_socket_kb": r["rss_per_socket_kb"],
        "server_cpu": r["cpu_share"]["server"],
        "generators_cpu": r["cpu_share"]["generators"],
        "server_statements_per_minute": r["database"]["server_statements_per_minute"],
        "errors": r["error_count"],
    }


def write_report(output, results, *, quick):
    text = vs_report(results, quick)
    path = output / "WS_REPORT.md"
    # Everything below the marker is written by hand: a rerun keeps it, to check against.
    kept = path.read_text().split(READING_MARKER, 1)[1] if path.exists() and READING_MARKER in path.read_text() else ""
    path.write_text(text + READING_MARKER + (kept or "\n\n## Reading\n\n(to be written from the figures above)\n"))
    return text


if __name__ == "__main__":
    main()
