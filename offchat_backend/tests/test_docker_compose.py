"""No Docker engine runs here: check the compose file against the code instead."""

import os
import re
import secrets
import subprocess
import sys
import time
from urllib.parse import urlparse

import pytest
import yaml

from offchat_backend.tests.support import REPO, clean_env

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ["migrate", "web", "ws", "worker", "beat"]
INTERPOLATION = re.compile(r"\$\{(\w+)(?::-([^}]*)|:\?[^}]*)?\}")


def resolved(value, **given):
    """Compose's ${NAME:-default} and ${NAME:?message}, with `given` as the shell's environment."""
    return INTERPOLATION.sub(lambda m: given.get(m.group(1), m.group(2) or ""), str(value))


def app_env(service, **given):
    return {key: resolved(value, **given) for key, value in SERVICES[service]["environment"].items()}


def command(service):
    return " ".join(SERVICES[service]["command"])


def variables_the_settings_read():
    source = "\n".join(path.read_text() for path in (REPO / "offchat_backend" / "settings").glob("*.py"))
    return set(re.findall(r"env(?:\.\w+)?\(\s*\"([A-Z_]+)\"", source)) | {"DJANGO_SETTINGS_MODULE"}


def test_has_the_production_services():
    assert {"postgres", "redis", "web", "ws", "worker", "beat"} <= set(SERVICES)


def test_web_runs_gunicorn_worker_and_beat_run_celery():
    assert command("web").startswith("gunicorn offchat_backend.wsgi:application")
    assert command("worker").startswith("celery -A offchat_backend worker")
    assert command("beat").startswith("celery -A offchat_backend beat")
    assert "--beat" not in command("worker")  # the one scheduler is the beat service


def test_ws_runs_daphne_on_the_asgi_application_beside_gunicorn():
    """The presence WebSocket under daphne (chosen by bench/ws.py: bench/WS_REPORT.md); HTTP
    stays on gunicorn, which serves it faster."""
    words = SERVICES["ws"]["command"]
    assert words[0] == "daphne" and words[-1] == "offchat_backend.asgi:application"
    assert "--bind=0.0.0.0" in words and "--port=8001" in words
    assert "8001:8001" in SERVICES["ws"]["ports"]
    assert "8001" in SERVICES["ws"]["healthcheck"]["test"][-1]
    assert "-v" not in words and "--verbosity" not in " ".join(words)  # daphne's access log stays path-only


def test_ws_shares_every_setting_with_web():
    """Same database, Redis, secret (tokens minted by web verify in ws) and presence settings."""
    web, ws = app_env("web", SECRET_KEY="k"), app_env("ws", SECRET_KEY="k")
    assert {key: ws[key] for key in web if key != "PROMETHEUS_MULTIPROC_DIR"} == {
        key: value for key, value in web.items() if key != "PROMETHEUS_MULTIPROC_DIR"
    }
    assert SERVICES["ws"]["environment"]["SECRET_KEY"] == SERVICES["web"]["environment"]["SECRET_KEY"]
    # One process: its sockets are its own; metric files would only mix it with gunicorn's.
    assert "PROMETHEUS_MULTIPROC_DIR" not in ws
    assert {"PRESENCE_PUSH_INTERVAL", "PRESENCE_DISCONNECT_GRACE"} <= set(ws)


def test_exactly_one_beat():
    assert SERVICES["beat"].get("deploy", {}).get("replicas", 1) == 1
    assert sum("beat" in command(name) for name in APP_SERVICES) == 1


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_run_production_settings_with_only_variables_the_settings_read(service):
    env = app_env(service)
    assert env["DJANGO_SETTINGS_MODULE"] == "offchat_backend.settings.production"
    assert set(env) <= variables_the_settings_read()
    assert "SECRET_KEY" in SERVICES[service]["environment"]
    assert ":?" in SERVICES[service]["environment"]["SECRET_KEY"]  # no default secret


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_point_at_the_compose_database_and_redis(service):
    env = app_env(service)
    postgres = app_env("postgres")
    assert env["DB_HOST"] == "postgres"
    assert (env["DB_NAME"], env["DB_USER"], env["DB_PASSWORD"]) == (
        postgres["POSTGRES_DB"],
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
    )
    assert urlparse(env["REDIS_URL"]).hostname == "redis"
    depends = SERVICES[service]["depends_on"]
    assert depends["postgres"]["condition"] == depends["redis"]["condition"] == "service_healthy"


def test_long_running_services_wait_for_migrations_and_have_health_checks():
    for name in ("postgres", "redis", "web", "ws", "worker", "beat"):
        assert SERVICES[name]["healthcheck"]["test"], name
    for name in ("web", "ws", "worker"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "migrate" in command("migrate")


@pytest.mark.parametrize(
    ("sweep_interval", "schedule_files_age", "healthy"),
    [
        ("60", 10, True),
        ("60", 299, True),
        ("60", 301, False),
        ("60", None, False),
        ("600", 1300, True),  # a slower sweep ticks beat less often
        ("600", 1400, False),
    ],
)
def test_beat_health_check_follows_the_schedule_files_age(tmp_path, sweep_interval, schedule_files_age, healthy):
    schedule = tmp_path / "celerybeat-schedule"
    if schedule_files_age is not None:
        for suffix in (".dat", ".dir"):
            path = tmp_path / f"celerybeat-schedule{suffix}"
            path.touch()
            then = time.time() - schedule_files_age
            os.utime(path, (then, then))
    check = SERVICES["beat"]["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"]
    env = clean_env(CELERY_BEAT_SCHEDULE_FILENAME=str(schedule), PRESENCE_SWEEP_INTERVAL=sweep_interval)
    result = subprocess.run([sys.executable, "-c", check[3]], env=env)
    assert (result.returncode == 0) == healthy


def test_production_settings_accept_the_compose_environment(tmp_path):
    env = app_env("web", SECRET_KEY=secrets.token_urlsafe(50))
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=clean_env(**env, LOCAL_STATE_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
