"""Helpers for tests that start the project's own processes (worker, gunicorn, settings)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple

from django.conf import settings
from django.db import connection

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

# What a developer's or CI's shell may carry; a process under test gets only what its test gives it.
CONFIG_VARIABLES = frozenset(
    {
        "DJANGO_SETTINGS_MODULE",
        "DATABASE_URL",
        "DB_NAME",
        "DB_USER",
        "DB_PASSWORD",
        "DB_HOST",
        "DB_PORT",
        "REDIS_URL",
        "CELERY_BROKER_URL",
        "LOCAL_STATE_DIR",
        "SECRET_KEY",
        "DEBUG",
        "ALLOWED_HOSTS",
        "CORS_ALLOWED_ORIGINS",
        "METRICS_TOKEN",
        "LOG_FORMAT",
        "LOG_LEVEL",
        "PROMETHEUS_MULTIPROC_DIR",
        "DASHBOARD_POLL_INTERVAL",
        "STATIC_ROOT",
    }
    | {name for name in os.environ if name.startswith("PRESENCE_")}
)


def clean_env(**config):
    """The caller's environment less any configuration, and no developer's .env file either."""
    env = {key: value for key, value in os.environ.items() if key not in CONFIG_VARIABLES}
    return {**env, "READ_DOT_ENV_FILE": "false", **config}


def session_database_url():
    """DATABASE_URL of the database this test session runs on (PostgreSQL only)."""
    db = connection.settings_dict
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# The host the production-settings processes under test serve (their ALLOWED_HOSTS).
PROXIED_HOST = "presence.example.com"


def api_request(port, path, *, token=None, body=None, method=None, timeout=10, host=PROXIED_HOST):
    """A request as the TLS proxy in front of gunicorn passes it on: (status, the body parsed as
    JSON, or as text when it is not); a connection failure is status 0."""
    headers = {"Host": host, "X-Forwarded-Proto": "https", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    call = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(call, timeout=timeout) as response:
            return response.status, _parsed(response.read())
    except urllib.error.HTTPError as error:
        return error.code, _parsed(error.read())
    except OSError:
        return 0, None


def _parsed(content):
    try:
        return json.loads(content or "null")
    except ValueError:
        return content.decode(errors="replace")


def answers_http(port):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
    except urllib.error.HTTPError:
        return True  # any HTTP answer, even a 404: it is serving
    except OSError:
        return False
    return True


class ProjectProcess:
    """One of the project's own commands (a worker, gunicorn) running from the repository,
    its output kept in `log_path` and shown whenever a wait gives up."""

    def __init__(self, command, *, env, log_path):
        self.log_path = Path(log_path)
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_for(self, condition, *, timeout=60, while_waiting=lambda: None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the process exited early:\n{self.output()}"
            if condition():
                return
            while_waiting()
            time.sleep(0.25)
        raise AssertionError(f"gave up after {timeout}s; process output:\n{self.output()}")

    def output(self):
        if not self.log.closed:  # also readable after stop()
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self):
        """SIGTERM to the whole process group (prefork children, gunicorn workers), then SIGKILL."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


class PrivateRedis:
    """A redis-server of the test's own on a free port, which the test may stop and start
    again (same port, empty data, as a restarted Redis without persistence comes back)."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as probe:
                    probe.sendall(b"PING\r\n")
                    if probe.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"redis-server did not start on port {self.port}")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def postgres_bin_dir():
    """The newest PostgreSQL server binaries Debian installed, or None."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda path: int(path.parts[-3]))
    return versions[-1].parent if versions else None


class PrivatePostgres:
    """A PostgreSQL server of the test's own (initdb into a fresh folder, on a free port), which
    the test may restart without touching the machine's server. PostgreSQL refuses to run as
    root, so under root its commands run as the `postgres` user."""

    def __init__(self):
        self.bin = postgres_bin_dir()
        self.directory = Path(tempfile.mkdtemp(prefix="offchat-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()

    def url(self, database="postgres"):
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *command):
        if os.geteuid() == 0:
            command = ("runuser", "-u", "postgres", "--", *command)
        # Not captured: the server pg_ctl starts would hold the pipes open. Its log is a file.
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)

    def start(self):
        if not self.data.exists():
            if os.geteuid() == 0:
                shutil.chown(self.directory, "postgres")
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory}"
        self._pg_ctl("-o", options, "start")

    def restart(self):
        """A fast restart, as `systemctl restart postgresql` does: open connections are cut."""
        self._pg_ctl("-m", "fast", "restart")

    def _pg_ctl(self, *arguments):
        log = str(self.directory / "log")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", log, "-w", *arguments)

    def stop(self):
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.directory, ignore_errors=True)


def waiting_on_a_lock():
    """Whether some connection to the test database waits for a row lock (PostgreSQL)."""
    with connection.cursor() as cursor:
        # Activity statistics are a snapshot per transaction, and the caller may hold one open.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return cursor.fetchone()[0] > 0


def session_database_env():
    """DATABASE_URL for a process under test to share this test session's database: the
    PostgreSQL one, or SQLite's file (the test settings keep it in a file for that)."""
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        return session_database_url()
    return f"sqlite:///{db['NAME']}"


class AsgiServer(ProjectProcess):
    """`daphne` (or `uvicorn`) serving offchat_backend.asgi on a free port, on this test
    session's database, with development settings unless `env` says otherwise."""

    def __init__(self, tmp_path, *, server="daphne", name="asgi", **env):
        self.port = free_port()
        config = {
            "DJANGO_SETTINGS_MODULE": "offchat_backend.settings.development",
            "DATABASE_URL": session_database_env(),
            "LOCAL_STATE_DIR": str(tmp_path / name),
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            # Tokens the test process issues must verify there.
            "SECRET_KEY": settings.SECRET_KEY,
            **env,
        }
        if server == "daphne":
            command = [
                str(VENV_BIN / "daphne"),
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "offchat_backend.asgi:application",
            ]
        else:
            command = [
                str(VENV_BIN / "uvicorn"), "offchat_backend.asgi:application", "--host", "127.0.0.1",
                "--port", str(self.port), "--no-access-log", "--log-level", "warning",
            ]  # fmt: skip
        super().__init__(command, env=clean_env(**config), log_path=tmp_path / f"{name}.log")
        self.wait_for(self._answers, timeout=30)

    def _answers(self):
        return api_request(self.port, "/api/health/", host="127.0.0.1")[0] != 0

    def ws_url(self, query=""):
        return f"ws://127.0.0.1:{self.port}/ws/presence/{query}"

    def http(self, path, **kwargs):
        return api_request(self.port, path, host="127.0.0.1", **kwargs)


class _RememberedCommand(ProjectProcess):
    """Keeps the command and environment a process was started with, to start it again."""

    def __init__(self, command, *, env, log_path):
        self.command, self.env = command, env
        super().__init__(command, env=env, log_path=log_path)


class RestartableAsgiServer(AsgiServer, _RememberedCommand):
    """An AsgiServer that can be stopped and started again on the same port, as a deploy or a
    crash followed by a restart does to clients that know its address. Each start logs to a
    file of its own (`logs`)."""

    def __init__(self, tmp_path, **kwargs):
        super().__init__(tmp_path, **kwargs)
        self.logs = [self.log_path]

    def start_again(self):
        assert self.process.poll() is not None, "stop it first"
        log_path = self.logs[0].with_name(f"{self.logs[0].stem}-{len(self.logs)}.log")
        ProjectProcess.__init__(self, self.command, env=self.env, log_path=log_path)
        self.logs.append(log_path)
        self.wait_for(self._answers, timeout=30)

    def all_output(self):
        self.output()
        return "".join(path.read_text(errors="replace") for path in self.logs)


class Usage(NamedTuple):
    """What a process holds: resident memory (KiB), open file descriptors, threads, and the CPU
    it used so far (seconds)."""

    rss_kib: int
    fds: int
    threads: int
    cpu_seconds: float

    def __str__(self):
        return f"RSS {self.rss_kib / 1024:.0f} MiB, {self.fds} fds, {self.threads} threads"


def database_connections(pid, *, port=5432) -> int:
    """How many TCP connections to `port` (PostgreSQL's) the process `pid` holds: its socket
    descriptors matched against the kernel's TCP table."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    held = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            held += remote_port == port and fields[9] in inodes
    return held


def usage(pid) -> Usage:
    """A process's Usage now, from /proc."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    # /proc/<pid>/stat: utime and stime are fields 14 and 15, after the parenthesised command name.
    ticks = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]
    return Usage(
        rss_kib=int(status["VmRSS"].split()[0]),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(status["Threads"]),
        cpu_seconds=sum(int(tick) for tick in ticks) / os.sysconf("SC_CLK_TCK"),
    )
