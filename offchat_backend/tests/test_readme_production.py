"""The README's production block ("### Production processes"), run as written in bash against real
PostgreSQL and Redis: a fresh database of its own (dropped after) and a Redis db of its own.

Only the values of the block's `export` lines are replaced (a reader edits them too); its other
lines run unchanged. The long-running commands (gunicorn, celery) run in the background, each in
the exported environment, and are stopped at the end."""

import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from conftest import skip_for_missing_service
from offchat_backend.tests.support import (
    PROXIED_HOST,
    REPO,
    VENV_BIN,
    ProjectProcess,
    api_request,
    clean_env,
    free_port,
    session_database_url,
)

MARKER = "<!-- production-block"
LONG_RUNNING = ("gunicorn", "celery")


def production_block():
    """The ```sh block right below the README's production-block marker."""
    readme = (REPO / "README.md").read_text()
    assert readme.count(MARKER) == 1, "README.md must mark its production block exactly once"
    match = re.match(r"[^\n]*-->\n```sh\n(.*?\n)```\n", readme.split(MARKER, 1)[1], re.S)
    assert match, "the production-block marker must sit right above a ```sh block"
    return match.group(1)


def logical_lines(block):
    """Each command with its continuation lines, as written."""
    lines, current = [], []
    for line in block.splitlines():
        current.append(line)
        if not line.endswith("\\"):
            lines.append("\n".join(current))
            current = []
    assert not current, "the block ends in a continuation"
    return lines


def words(command):
    return shlex.split(command.replace("\\\n", " "), comments=True)


def split_block(block):
    """(export lines, the commands before the long-running ones, the long-running ones, the
    commands after them); comments and blank lines stay with their neighbours."""
    exports, before, long_running, after = [], [], [], []
    for line in logical_lines(block):
        first = (words(line) or [""])[0]
        if first == "export":
            exports.append(line)
        elif first in LONG_RUNNING:
            long_running.append(line)
        else:
            (after if long_running else before).append(line)
    return exports, before, long_running, after


def rewritten_exports(exports, values):
    """The export lines with the test's values in place of the reader's; (lines, every exported
    variable with the value it ends up with)."""
    lines, exported = [], {}
    for line in exports:
        assignments = [word.split("=", 1) for word in words(line)[1:]]
        assert all(len(pair) == 2 for pair in assignments), f"export without a value: {line}"
        exported.update({name: values.get(name, value) for name, value in assignments})
        lines.append(
            "export " + " ".join(f"{name}={shlex.quote(values.get(name, value))}" for name, value in assignments)
        )
    return lines, exported


def script(*parts):
    return "\n".join(["set -euo pipefail", *(line for part in parts for line in part)]) + "\n"


def plain_http(port, path, *, proxied=False):
    """A GET straight to gunicorn, as a load balancer (plain HTTP) or the TLS proxy
    (`X-Forwarded-Proto: https`) sends it, redirects not followed: (status, Location, body)."""
    headers = {"Host": PROXIED_HOST, **({"X-Forwarded-Proto": "https"} if proxied else {})}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheader("Location"), response.read()
    except OSError:
        return 0, None, b""
    finally:
        connection.close()


def psql(url, sql):
    result = subprocess.run(["psql", url, "-tAc", sql], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture
def services():
    """A database name nobody created (dropped after) and a Redis db of its own (flushed)."""
    if not (shutil.which("psql") and shutil.which("createdb")):
        skip_for_missing_service("needs PostgreSQL's client tools (apt-get install postgresql-client)")
    server = urlsplit(session_database_url())
    maintenance = server._replace(path="/postgres").geturl()
    database = f"offchat_readme_{secrets.token_hex(4)}"
    # The session's Redis server, on a db next to the session's: this test's worker must not
    # share a queue with another one's.
    redis = urlsplit(settings.REDIS_URL)
    session_db = int(redis.path.strip("/") or 0)
    redis_url = redis._replace(path=f"/{session_db - 1 if session_db else 1}").geturl()

    import redis as redis_client

    redis_client.Redis.from_url(redis_url).flushdb()
    yield server._replace(path=f"/{database}").geturl(), redis_url
    psql(maintenance, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    redis_client.Redis.from_url(redis_url).flushdb()


@pytest.mark.postgres
@pytest.mark.redis
def test_the_readme_production_block_runs_as_written(services, tmp_path):
    database_url, redis_url = services
    exports, before, long_running, after = split_block(production_block())
    port = free_port()
    admin = {"username": "ops-admin", "password": secrets.token_urlsafe(16)}
    values = {
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": PROXIED_HOST,
        "PORT": str(port),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),
        "DJANGO_SUPERUSER_USERNAME": admin["username"],
        "DJANGO_SUPERUSER_EMAIL": "ops-admin@example.com",
        "DJANGO_SUPERUSER_PASSWORD": admin["password"],
    }
    exports, exported = rewritten_exports(exports, values)
    assert set(values) <= set(exported), f"the block no longer exports {set(values) - set(exported)}"
    assert exported["DJANGO_SETTINGS_MODULE"] == "offchat_backend.settings.production"
    [gunicorn_command] = [line for line in long_running if words(line)[0] == "gunicorn"]
    [worker_command] = [line for line in long_running if words(line)[0] == "celery"]
    assert "--beat" in words(worker_command), "one celery worker with beat, or nothing sweeps"
    # The project's folder, its virtualenv first on PATH; files where the test can throw them away.
    env = clean_env(
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        STATIC_ROOT=str(tmp_path / "static"),
        LOCAL_STATE_DIR=str(tmp_path / "state"),
    )
    # Metric files of an earlier deploy, which the block must throw away.
    (tmp_path / "prometheus").mkdir()
    (tmp_path / "prometheus" / "counter_1.db").write_bytes(b"stale")

    setup = subprocess.run(
        ["bash", "-c", script(exports, before)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert setup.returncode == 0, f"{setup.stdout}\n{setup.stderr}"
    assert psql(database_url, f"SELECT is_staff, is_superuser FROM users WHERE username = '{admin['username']}'") == (
        "t|t"
    )
    assert not (tmp_path / "prometheus" / "counter_1.db").exists()

    processes = [
        ProjectProcess(["bash", "-c", script(exports, ["exec " + command])], env=env, log_path=tmp_path / f"{name}.log")
        for name, command in (("gunicorn", gunicorn_command), ("worker", worker_command))
    ]
    web, worker = processes
    try:
        # Health over plain HTTP, not redirected, says 200 once the worker's beat has swept.
        web.wait_for(lambda: plain_http(port, "/api/health/")[0] != 0, timeout=30)
        worker.wait_for(lambda: plain_http(port, "/api/health/")[0] == 200, timeout=30)
        status, location, body = plain_http(port, "/api/health/")
        health = json.loads(body)
        assert (status, location, health["status"]) == (200, None, "ok"), health
        assert health["checks"]["sweeper"]["ok"] and health["checks"]["database"]["vendor"] == "postgresql"

        # The block's own check: health, a login with the admin it created, a heartbeat.
        check = subprocess.run(
            ["bash", "-c", script(exports, after)], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0, f"{check.stdout}\n{check.stderr}\n{web.output()}"
        assert re.search(r'"online_status":\s*"online"', check.stdout), check.stdout

        # The pages that need collectstatic's manifest, through the TLS proxy.
        for path in ("/dashboard/", "/admin/login/", "/api/docs/"):
            assert plain_http(port, path, proxied=True)[0] == 200, f"{path}\n{web.output()}"
        status, tokens = api_request(port, "/api/users/login/", body=admin)
        assert status == 200, tokens
        status, heartbeat = api_request(port, "/api/users/heartbeat/", token=tokens["access"], body={})
        assert (status, heartbeat["online_status"]) == (200, "online")

        # Plain HTTP: health and metrics are served, anything else is sent to https.
        status, location, body = plain_http(port, "/metrics")
        assert (status, location) == (200, None) and b"offchat_presence_sweeps_total" in body
        assert b'offchat_presence_heartbeats_total{status="online"} 2.0' in body  # summed over the workers
        assert plain_http(port, "/api/users/all-users/")[:2] == (301, f"https://{PROXIED_HOST}/api/users/all-users/")
        assert plain_http(port, "/dashboard/")[:2] == (301, f"https://{PROXIED_HOST}/dashboard/")
    finally:
        for process in processes:
            process.stop()
    assert "presence_sweep" in worker.output()
