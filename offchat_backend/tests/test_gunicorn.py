"""The README's production command, run for real against PostgreSQL and Redis."""

import json
import re
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.core.cache import caches

from offchat_backend.tests.support import (
    REPO,
    VENV_BIN,
    ProjectProcess,
    answers_http,
    api_request,
    clean_env,
    free_port,
    session_database_url,
)
from users.api.throttling import add_to_windows
from users.models import OnlineStatus, User
from users.tests.factories import PASSWORD, UserFactory


def call(port, path, body=None, token=None):
    """A POST with a JSON body (`{}` when none)."""
    return api_request(port, path, token=token, body=body or {})


def start_gunicorn(tmp_path, *, workers=2, **config):
    """gunicorn with production settings, `config` over them; its port and process."""
    port = free_port()
    env = clean_env(
        DJANGO_SETTINGS_MODULE="offchat_backend.settings.production",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="presence.example.com",
        DATABASE_URL=session_database_url(),
        REDIS_URL=settings.REDIS_URL,
        LOCAL_STATE_DIR=str(tmp_path),
        STATIC_ROOT=str(tmp_path / "static"),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
        **config,
    )
    # As the Docker image does at build time.
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--no-input"], cwd=REPO, env=env, check=True, capture_output=True
    )
    server = ProjectProcess(
        [
            str(VENV_BIN / "gunicorn"),
            "offchat_backend.wsgi:application",
            f"--bind=127.0.0.1:{port}",
            f"--workers={workers}",
        ],
        env=env,
        log_path=tmp_path / "gunicorn.log",
    )
    server.wait_for(lambda: answers_http(port), timeout=30)
    return port, server


@pytest.fixture
def gunicorn(tmp_path):
    port, server = start_gunicorn(tmp_path)
    yield port, server
    server.stop()


def log_in_with_production_hashing(port):
    """A new user logged in through `port`: the user and the access token."""
    # Production verifies with PBKDF2; the test settings hash with MD5 for speed.
    hasher = PBKDF2PasswordHasher()
    user = UserFactory()
    User.objects.filter(pk=user.pk).update(password=hasher.encode(PASSWORD, hasher.salt()))
    status, tokens = call(port, "/api/users/login/", {"username": user.username, "password": PASSWORD})
    assert status == 200, tokens
    return user, tokens["access"]


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_gunicorn_with_production_settings_logs_in_heartbeats_and_logs_out(gunicorn):
    gunicorn, server = gunicorn
    # Production verifies with PBKDF2; the test settings hash with MD5 for speed.
    hasher = PBKDF2PasswordHasher()
    user = UserFactory()
    User.objects.filter(pk=user.pk).update(password=hasher.encode(PASSWORD, hasher.salt()))

    status, tokens = call(gunicorn, "/api/users/login/", {"username": user.username, "password": PASSWORD})
    assert status == 200, tokens
    assert User.objects.get(pk=user.pk).online_status == OnlineStatus.ONLINE

    status, heartbeat = call(gunicorn, "/api/users/heartbeat/", token=tokens["access"])
    assert (status, heartbeat["online_status"]) == (200, "online")

    status, _ = call(gunicorn, "/api/users/logout/", {"refresh": tokens["refresh"]}, token=tokens["access"])
    assert status == 200
    assert User.objects.get(pk=user.pk).online_status == OnlineStatus.OFFLINE

    status, error = call(gunicorn, "/api/users/login/", {"username": user.username, "password": "wrong"})
    assert status == 401 and "detail" in error

    # Production logs are JSON lines with the event's fields.
    events = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    assert {(event["event"], event["outcome"]) for event in events if "outcome" in event} >= {
        ("login", "success"),
        ("logout", "success"),
        ("login", "failure"),
    }
    # Heartbeats counted across both workers (PROMETHEUS_MULTIPROC_DIR).
    metrics = fetch(gunicorn, "/metrics")[1].decode()
    assert 'offchat_presence_heartbeats_total{status="online"} 1.0' in metrics


def fetch(port, path):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", headers={"X-Forwarded-Proto": "https", "Host": "presence.example.com"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_gunicorn_serves_the_dashboard_files_and_health(gunicorn):
    gunicorn, _ = gunicorn
    status, page, _ = fetch(gunicorn, "/dashboard/")
    assert status == 200
    # Hashed names (ManifestStaticFilesStorage), served by whitenoise with a far-future cache.
    [script] = re.findall(r'src="(/static/dashboard/presence\.[0-9a-f]{12}\.js)"', page.decode())
    status, body, headers = fetch(gunicorn, script)
    assert status == 200 and b"followFeed" in body
    assert "immutable" in headers["Cache-Control"]

    status, health, _ = fetch(gunicorn, "/api/health/")
    assert status == 503  # no worker runs in this test: no sweep ever completed
    assert json.loads(health)["checks"]["database"] == {"ok": True, "vendor": "postgresql"}


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_gunicorn_refuses_an_oversized_body_with_a_json_413(gunicorn):
    """Django's DATA_UPLOAD_MAX_MEMORY_SIZE, answered as the API's JSON 413 (not Django's bare
    400) through a real server."""
    gunicorn, _ = gunicorn
    user = UserFactory()
    hasher = PBKDF2PasswordHasher()  # what production verifies with
    User.objects.filter(pk=user.pk).update(password=hasher.encode(PASSWORD, hasher.salt()))
    status, tokens = call(gunicorn, "/api/users/login/", {"username": user.username, "password": PASSWORD})
    assert status == 200, tokens

    padding = "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    status, error = call(
        gunicorn, "/api/users/heartbeat/", {"status": "away", "padding": padding}, token=tokens["access"]
    )
    assert (status, error) == (
        413,
        {"detail": f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."},
    )
    assert User.objects.get(pk=user.pk).presence_sessions.get().reported_status == "online"


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("workers", [1, 2])
def test_gunicorn_writes_deferred_heartbeats_within_the_interval_and_the_rest_when_it_stops(tmp_path, workers):
    """Production's deferred activity writes through a real server: by each worker's thread
    within PRESENCE_WRITE_BATCH_INTERVAL, and at a graceful stop (SIGTERM) before it exits."""

    def last_seen(user):
        return User.objects.get(pk=user.pk).last_seen

    port, server = start_gunicorn(
        tmp_path, PRESENCE_WRITE_GRANULARITY="0", PRESENCE_WRITE_BATCH_INTERVAL="0.5", workers=workers
    )
    try:
        user, token = log_in_with_production_hashing(port)
        logged_in = last_seen(user)
        assert call(port, "/api/users/heartbeat/", token=token)[0] == 200
        server.wait_for(lambda: last_seen(user) > logged_in, timeout=20)  # 40 intervals: liveness only
    finally:
        server.stop()

    port, server = start_gunicorn(
        tmp_path, PRESENCE_WRITE_GRANULARITY="0", PRESENCE_WRITE_BATCH_INTERVAL="59", workers=workers
    )
    try:
        user, token = log_in_with_production_hashing(port)  # each server signs with a key of its own
        heartbeats = [call(port, "/api/users/heartbeat/", token=token)[0] for _ in range(workers * 4)]
        assert heartbeats == [200] * len(heartbeats)
        waiting = last_seen(user)
        assert User.objects.get(pk=user.pk).presence_sessions.get().last_seen == waiting  # a minute to wait yet
    finally:
        server.stop()
    assert server.process.returncode == 0
    assert last_seen(user) > waiting  # written as the workers exited
    assert User.objects.get(pk=user.pk).presence_sessions.get().last_seen == last_seen(user)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_gunicorn_adds_heartbeat_counts_to_redis_in_batches_and_at_a_graceful_stop(tmp_path):
    """The heartbeat's throttle counted in batches (users.api.throttling) through a real server:
    the worker's thread adds its count to Redis within THROTTLE_HEARTBEAT_BATCH_INTERVAL and
    refuses once it hears the shared count over the limit; what is unsent at SIGTERM is sent."""
    cache = caches["default"]

    def window_key(user):
        return f"throttle:heartbeat:{user.pk}:{int(time.time() // 3600)}"

    def shared_count(user):
        return cache.get(window_key(user))

    if time.time() % 3600 > 3570:  # the hour's window must not end during the test
        time.sleep(3601 - time.time() % 3600)
    limits = {"THROTTLE_RATE_HEARTBEAT": "3/hour", "THROTTLE_RATE_LOGIN": "1000/min"}
    port, server = start_gunicorn(tmp_path, THROTTLE_HEARTBEAT_BATCH_INTERVAL="0.3", workers=1, **limits)
    try:
        user, token = log_in_with_production_hashing(port)
        add_to_windows(cache=cache, additions=[(window_key(user), 3, 3600)])  # as other workers would have counted
        assert call(port, "/api/users/heartbeat/", token=token)[0] == 200  # not heard of yet
        server.wait_for(lambda: shared_count(user) == 4, timeout=20)  # 60 intervals: liveness only
        assert call(port, "/api/users/heartbeat/", token=token)[0] == 429
    finally:
        server.stop()

    port, server = start_gunicorn(tmp_path, THROTTLE_HEARTBEAT_BATCH_INTERVAL="9", workers=1, **limits)
    try:
        user, token = log_in_with_production_hashing(port)
        assert [call(port, "/api/users/heartbeat/", token=token)[0] for _ in range(2)] == [200, 200]
        assert shared_count(user) is None  # nine seconds to wait yet
    finally:
        server.stop()
    assert server.process.returncode == 0
    assert shared_count(user) == 2
