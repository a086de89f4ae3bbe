"""Demo traffic: demo users log in and heartbeat through the real HTTP API (or, with
`--transport ws`, log in over HTTP and keep a presence socket open each), so that the dashboard
has something to show. Development only: the demo accounts share one password."""

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import requests
import requests.adapters
from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.sync.client import connect as ws_connect

from users.models import User

# Who the demo users are, in turn: most stay, some go idle (their app reports away), some
# log out, and some vanish without a word (a closed laptop: the sweeper marks them offline).
BEHAVIOURS = ["steady", "idle", "leaver", "steady", "vanisher", "steady", "idle", "steady", "leaver", "steady"]
DEMO_PASSWORD = "demo-password"
PROGRESS_FORMAT = "{desc}: {bar} {n_fmt}/{total_fmt} s{postfix}"


@dataclass
class DemoUser:
    username: str
    behaviour: str
    turns_at: float  # seconds into the run when it goes idle, logs out or vanishes
    state: str = "new"  # new, online, away, logged_out, silent
    tokens: dict = field(default_factory=dict)
    next_heartbeat: float = 0.0
    socket: object | None = None  # --transport ws: the user's presence socket


class Command(BaseCommand):
    help = (
        "Log in N demo users and heartbeat them through the HTTP API for S seconds (some go "
        "idle, some log out, some vanish), to watch the dashboard move. With --transport ws each "
        "keeps a presence socket open instead of heartbeating (needs an ASGI server: daphne or "
        "uvicorn). Needs the server running."
    )

    def add_arguments(self, parser):
        parser.add_argument("--users", type=int, default=20, help="How many demo users (default 20).")
        parser.add_argument("--duration", type=float, default=120, help="Seconds to run (default 120).")
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="The running server.")
        parser.add_argument("--interval", type=float, help="Seconds between heartbeats (default: the server's).")
        parser.add_argument("--prefix", default="demo", help="Demo usernames are <prefix>-001, ...")
        parser.add_argument("--seed", type=int, help="For a repeatable run.")
        parser.add_argument("--concurrency", type=int, default=32, help="HTTP calls in flight at most.")
        parser.add_argument(
            "--transport",
            choices=["http", "ws"],
            default="http",
            help="http: heartbeats (default); ws: one /ws/presence/ socket per user, pinged, with status frames.",
        )

    def handle(self, *args, users, duration, url, interval, prefix, seed, concurrency, transport="http", **options):
        if not settings.DEBUG:
            raise CommandError(
                "simulate_presence makes accounts with a known password; it refuses to run with DEBUG off."
            )
        if users < 1 or duration <= 0 or concurrency < 1:
            raise CommandError("--users, --duration and --concurrency must be positive.")
        if transport not in ("http", "ws"):
            raise CommandError("--transport is http or ws.")
        self.concurrency = concurrency
        self.api = url.rstrip("/") + "/api/users"
        self.transport = transport
        # http://host -> ws://host/ws/presence/, https:// -> wss://
        self.ws_url = "ws" + url.rstrip("/").removeprefix("http") + "/ws/presence/"
        self.interval = interval
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "frames": 0, "errors": 0}
        chance = random.Random(seed)
        demo = [
            DemoUser(
                username=username,
                behaviour=BEHAVIOURS[index % len(BEHAVIOURS)],
                turns_at=chance.uniform(duration * 0.2, duration * 0.8),
            )
            for index, username in enumerate(self._ensure_accounts(prefix=prefix, count=users))
        ]
        self._run(demo, duration=duration)

    def _ensure_accounts(self, *, prefix: str, count: int) -> list[str]:
        usernames = [f"{prefix}-{number:03d}" for number in range(1, count + 1)]
        existing = set(User.objects.filter(username__in=usernames).values_list("username", flat=True))
        password = make_password(DEMO_PASSWORD)  # hashed once, shared by every demo account
        User.objects.bulk_create(
            User(username=name, first_name="Demo", last_name=name.rsplit("-", 1)[-1], password=password)
            for name in usernames
            if name not in existing
        )
        User.objects.filter(username__in=usernames).update(password=password, is_active=True)
        return usernames

    def _run(self, demo: list[DemoUser], *, duration: float) -> None:
        started = time.monotonic()
        with (
            requests.Session() as self.http,
            ThreadPoolExecutor(max_workers=self.concurrency) as pool,
            tqdm(total=round(duration), desc="simulating", bar_format=PROGRESS_FORMAT) as progress,
        ):
            self.http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=self.concurrency))
            self.http.mount("https://", requests.adapters.HTTPAdapter(pool_maxsize=self.concurrency))
            busy: set[str] = set()
            while (elapsed := time.monotonic() - started) < duration:
                for user in demo:
                    if user.username not in busy and self._due(user, elapsed):
                        busy.add(user.username)
                        pool.submit(self._act, user, elapsed).add_done_callback(
                            lambda _, name=user.username: busy.discard(name)
                        )
                progress.n = min(round(elapsed), progress.total)
                progress.set_postfix(self._tally(demo), refresh=True)
                time.sleep(0.2)
            progress.n = progress.total
            progress.set_postfix(self._tally(demo), refresh=True)
        for user in demo:
            self._close_socket(user)
        tally = self._tally(demo)
        frames = f"{self.counts['frames']} frames, " if self.transport == "ws" else ""
        self.stdout.write(
            f"Done: {tally['online']} online, {tally['away']} away, {tally['logged_out']} logged out, "
            f"{tally['silent']} silent (the sweeper marks them offline), {self.counts['requests']} requests, "
            f"{frames}{self.counts['errors']} errors."
        )

    @staticmethod
    def _due(user: DemoUser, elapsed: float) -> bool:
        if user.state in ("logged_out", "silent"):
            return False
        return (
            user.state == "new"
            or elapsed >= user.next_heartbeat
            or (user.behaviour in ("leaver", "vanisher") and elapsed >= user.turns_at)
        )

    def _act(self, user: DemoUser, elapsed: float) -> None:
        try:
            if user.state == "new":
                self._log_in(user, elapsed)
            elif user.behaviour == "vanisher" and elapsed >= user.turns_at:
                user.state = "silent"  # stops heartbeating without logging out
            elif user.behaviour == "leaver" and elapsed >= user.turns_at:
                self._call("post", "/logout/", user, json={"refresh": user.tokens["refresh"]})
                self._close_socket(user)
                user.state = "logged_out"
            elif self.transport == "ws":
                self._keep_socket(user, elapsed)
            else:
                away = user.behaviour == "idle" and elapsed >= user.turns_at
                self._call("post", "/heartbeat/", user, json={"status": "away" if away else "online"})
                user.state = "away" if away else "online"
                user.next_heartbeat = elapsed + user.tokens["heartbeat_interval"]
        except (requests.RequestException, WebSocketException, OSError, TimeoutError) as failure:
            with self.lock:
                self.counts["errors"] += 1
            user.next_heartbeat = elapsed + 1
            self.stderr.write(f"{user.username}: {failure}")

    def _log_in(self, user: DemoUser, elapsed: float) -> None:
        response = self._send("post", "/login/", json={"username": user.username, "password": DEMO_PASSWORD})
        body = response.json()
        user.tokens = {
            "access": body["access"],
            "refresh": body["refresh"],
            "heartbeat_interval": self.interval or body["heartbeat_interval"],
        }
        if self.transport == "ws":
            self._open_socket(user)
        user.state = "online"
        user.next_heartbeat = elapsed + user.tokens["heartbeat_interval"]

    # --- --transport ws ---------------------------------------------------------------------
    def _open_socket(self, user: DemoUser) -> None:
        """The user's presence socket, authenticated by the token in its first frame (not the
        URL: URLs end up in access logs)."""
        user.socket = ws_connect(self.ws_url, open_timeout=10, user_agent_header="offchat-simulate-presence")
        hello = self._frame(user, {"type": "auth", "token": user.tokens["access"]})
        if hello.get("type") != "hello":
            self._close_socket(user)
            raise ConnectionError(f"the socket refused the token: {hello}")
        if not self.interval:
            user.tokens["heartbeat_interval"] = hello["ping_interval"]

    def _keep_socket(self, user: DemoUser, elapsed: float) -> None:
        """A ping at the ping interval; a status frame when the user turns away (idle)."""
        if user.socket is None:  # dropped earlier (a server restart): open it again
            self._open_socket(user)
        away = user.behaviour == "idle" and elapsed >= user.turns_at
        if away and user.state != "away":
            self._frame(user, {"type": "status", "status": "away"})
        elif not away and user.state == "away":
            self._frame(user, {"type": "status", "status": "online"})
        else:
            self._frame(user, {"type": "ping"})
        user.state = "away" if away else "online"
        user.next_heartbeat = elapsed + user.tokens["heartbeat_interval"]

    def _frame(self, user: DemoUser, frame: dict) -> dict:
        """Send a frame and return the server's answer, skipping pushed frames (presence)."""
        with self.lock:
            self.counts["frames"] += 1
        try:
            user.socket.send(json.dumps(frame))
            while True:
                answer = json.loads(user.socket.recv(timeout=10))
                if answer.get("type") not in ("presence", "user_status_change"):
                    break
        except (ConnectionClosed, TimeoutError):
            self._close_socket(user)
            raise
        if answer.get("type") == "error":
            raise ConnectionError(f"{answer.get('code')}: {answer.get('detail')}")
        return answer

    @staticmethod
    def _close_socket(user: DemoUser) -> None:
        socket, user.socket = user.socket, None
        if socket is not None:
            socket.close()

    def _call(self, method: str, path: str, user: DemoUser, **kwargs) -> requests.Response:
        try:
            return self._send(method, path, headers={"Authorization": f"Bearer {user.tokens['access']}"}, **kwargs)
        except requests.HTTPError as failure:
            if failure.response.status_code != 401:
                raise
        # The access token expired (a long run): refresh the pair once, as a frontend does.
        refreshed = self._send("post", "/token/refresh/", json={"refresh": user.tokens["refresh"]}).json()
        user.tokens.update(access=refreshed["access"], refresh=refreshed["refresh"])
        return self._send(method, path, headers={"Authorization": f"Bearer {user.tokens['access']}"}, **kwargs)

    def _send(self, method: str, path: str, **kwargs) -> requests.Response:
        for _ in range(5):
            with self.lock:
                self.counts["requests"] += 1
            response = self.http.request(method, self.api + path, timeout=10, **kwargs)
            if response.status_code != 429:
                response.raise_for_status()
                return response
            time.sleep(min(float(response.headers.get("Retry-After", 1)), 10))
        response.raise_for_status()
        return response

    @staticmethod
    def _tally(demo: list[DemoUser]) -> dict[str, int]:
        tally = {"online": 0, "away": 0, "logged_out": 0, "silent": 0}
        for user in demo:
            if user.state in tally:
                tally[user.state] += 1
        return tally
