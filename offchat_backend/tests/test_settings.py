"""Settings are evaluated once, at import: each case loads them in a fresh process."""

import json
import secrets
import subprocess
import sys

import pytest

from offchat_backend.tests.support import REPO, clean_env

PRODUCTION_ENV = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "presence.example.com",
    "DATABASE_URL": "postgres://offchat:secret@db.internal:5432/offchat",
    "REDIS_URL": "redis://cache.internal:6379/0",
}

SHOW_SETTINGS = """
import json, django
from django.conf import settings
django.setup()
db = settings.DATABASES["default"]
print(json.dumps({
    "DEBUG": settings.DEBUG,
    "ENGINE": db["ENGINE"], "NAME": str(db["NAME"]), "HOST": db.get("HOST"), "PORT": str(db.get("PORT")),
    "USER": db.get("USER"), "PASSWORD": db.get("PASSWORD"), "CONN_HEALTH_CHECKS": db.get("CONN_HEALTH_CHECKS"),
    "CACHE": settings.CACHES["default"]["BACKEND"], "CACHE_LOCATION": settings.CACHES["default"].get("LOCATION"),
    "BROKER": settings.CELERY_BROKER_URL,
    "BROKER_OPTIONS": getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}),
    "TIMEOUT": settings.PRESENCE_INACTIVITY_TIMEOUT, "SWEEP": settings.PRESENCE_SWEEP_INTERVAL,
    "HEARTBEAT": settings.PRESENCE_HEARTBEAT_INTERVAL,
    "CORS_ALLOWED_ORIGINS": settings.CORS_ALLOWED_ORIGINS,
    "LOG_FORMATTER": settings.LOGGING["handlers"]["console"]["formatter"],
    "STATICFILES": settings.STORAGES["staticfiles"]["BACKEND"],
    "WHITENOISE": "whitenoise.middleware.WhiteNoiseMiddleware" in settings.MIDDLEWARE,
    "LOGIN_RATE": settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["login"],
}))
"""


def load(module, tmp_path, **env):
    result = subprocess.run(
        [sys.executable, "-c", SHOW_SETTINGS],
        cwd=REPO,
        env=clean_env(
            **{"DJANGO_SETTINGS_MODULE": f"offchat_backend.settings.{module}", "LOCAL_STATE_DIR": str(tmp_path), **env}
        ),
        capture_output=True,
        text=True,
    )
    return result


def loaded(module, tmp_path, **env):
    result = load(module, tmp_path, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_development_with_no_environment_needs_no_server(tmp_path):
    config = loaded("development", tmp_path)
    assert config["DEBUG"] is True
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert config["NAME"] == str(tmp_path / "db.sqlite3")
    assert config["CACHE"].endswith("LocMemCache")
    assert config["BROKER"] == "filesystem://"
    for folder in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        assert (tmp_path / config["BROKER_OPTIONS"][folder]).is_dir()
    assert (config["TIMEOUT"], config["SWEEP"], config["HEARTBEAT"]) == (120, 60, 30)


def test_database_url_selects_postgresql_with_connection_health_checks(tmp_path):
    config = loaded("development", tmp_path, DATABASE_URL="postgres://u:p@db.example:6543/presence")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["NAME"], config["HOST"], config["PORT"], config["USER"]) == ("presence", "db.example", "6543", "u")
    assert config["CONN_HEALTH_CHECKS"] is True


def test_db_variables_select_postgresql(tmp_path):
    config = loaded(
        "development",
        tmp_path,
        DB_NAME="presence",
        DB_USER="svc",
        DB_PASSWORD="pw",
        DB_HOST="db.example",
        DB_PORT="6543",
    )
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["NAME"], config["USER"], config["PASSWORD"], config["HOST"], config["PORT"]) == (
        "presence",
        "svc",
        "pw",
        "db.example",
        "6543",
    )


def test_redis_url_selects_redis_for_cache_and_broker(tmp_path):
    config = loaded("development", tmp_path, REDIS_URL="redis://cache.example:6379/3")
    assert config["CACHE"] == "django.core.cache.backends.redis.RedisCache"


def test_presence_intervals_come_from_the_environment(tmp_path):
    config = loaded(
        "development",
        tmp_path,
        PRESENCE_INACTIVITY_TIMEOUT="300",
        PRESENCE_SWEEP_INTERVAL="15",
        PRESENCE_HEARTBEAT_INTERVAL="20",
    )
    assert (config["TIMEOUT"], config["SWEEP"], config["HEARTBEAT"]) == (300, 15, 20)


def test_production_loads_from_a_complete_environment(tmp_path):
    config = loaded("production", tmp_path, **PRODUCTION_ENV)
    assert config["DEBUG"] is False
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert config["CACHE"] == "django.core.cache.backends.redis.RedisCache"
    # No origin is allowed unless configured; logs are JSON lines; gunicorn serves hashed files.
    assert config["CORS_ALLOWED_ORIGINS"] == []
    assert config["LOG_FORMATTER"] == "json"
    assert config["STATICFILES"] == "whitenoise.storage.CompressedManifestStaticFilesStorage"
    assert config["WHITENOISE"] is True
    assert config["LOGIN_RATE"] == "20/min"


def test_cors_origins_and_log_format_come_from_the_environment(tmp_path):
    config = loaded(
        "production",
        tmp_path,
        **PRODUCTION_ENV,
        CORS_ALLOWED_ORIGINS="https://chat.example.com,https://admin.example.com",
        LOG_FORMAT="plain",
    )
    assert config["CORS_ALLOWED_ORIGINS"] == ["https://chat.example.com", "https://admin.example.com"]
    assert config["LOG_FORMATTER"] == "plain"


def test_development_allows_the_frontend_dev_server_and_local_demo_logins(tmp_path):
    config = loaded("development", tmp_path)
    assert config["CORS_ALLOWED_ORIGINS"] == ["http://localhost:5173"]
    assert config["LOG_FORMATTER"] == "plain"
    assert config["WHITENOISE"] is False  # runserver serves the files in development
    # simulate_presence logs many demo users in from 127.0.0.1.
    assert config["LOGIN_RATE"] == "6000/min"


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("SECRET_KEY", "SECRET_KEY"),
        ("ALLOWED_HOSTS", "ALLOWED_HOSTS"),
        ("DATABASE_URL", "Production runs on PostgreSQL"),
        ("REDIS_URL", "set REDIS_URL"),
    ],
)
def test_production_refuses_to_start_without(tmp_path, missing, message):
    env = {key: value for key, value in PRODUCTION_ENV.items() if key != missing}
    result = load("production", tmp_path, **env)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_production_passes_the_deploy_checklist(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=clean_env(
            DJANGO_SETTINGS_MODULE="offchat_backend.settings.production",
            LOCAL_STATE_DIR=str(tmp_path),
            **PRODUCTION_ENV,
        ),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


IMPORT_SETTINGS_ONLY = "import importlib, os; importlib.import_module(os.environ['DJANGO_SETTINGS_MODULE'])"


@pytest.mark.parametrize(
    ("module", "env"), [("development", {}), ("test", {}), ("production", PRODUCTION_ENV)], ids=["dev", "test", "prod"]
)
def test_importing_settings_makes_no_folder(tmp_path, module, env):
    state, metrics = tmp_path / "state", tmp_path / "metrics"
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_SETTINGS_ONLY],
        cwd=REPO,
        env=clean_env(
            DJANGO_SETTINGS_MODULE=f"offchat_backend.settings.{module}",
            LOCAL_STATE_DIR=str(state),
            PROMETHEUS_MULTIPROC_DIR=str(metrics),
            **env,
        ),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_production_process_makes_only_the_folders_it_was_told_to_use(tmp_path):
    state, metrics = tmp_path / "state", tmp_path / "metrics"
    loaded("production", tmp_path, **PRODUCTION_ENV, LOCAL_STATE_DIR=str(state), PROMETHEUS_MULTIPROC_DIR=str(metrics))
    assert not state.exists()
    assert metrics.is_dir()


REDIRECTS = """
import django
django.setup()
from django.http import HttpResponse
from django.middleware.security import SecurityMiddleware
from django.test import RequestFactory
middleware = SecurityMiddleware(lambda request: HttpResponse())
for path in ("/api/health/", "/metrics", "/api/health/x", "/metrics/", "/api/users/all-users/", "/dashboard/"):
    for proto in ("http", "https"):
        request = RequestFactory().get(path, HTTP_HOST="presence.example.com", HTTP_X_FORWARDED_PROTO=proto)
        print(path, proto, middleware(request).get("Location", "-"))
"""


def test_production_redirects_plain_http_to_https_except_health_and_metrics(tmp_path):
    """A load balancer's health check and Prometheus call gunicorn over plain HTTP."""
    result = subprocess.run(
        [sys.executable, "-c", REDIRECTS],
        cwd=REPO,
        env=clean_env(
            DJANGO_SETTINGS_MODULE="offchat_backend.settings.production",
            LOCAL_STATE_DIR=str(tmp_path),
            **PRODUCTION_ENV,
        ),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    redirects = dict(((path, proto), location) for path, proto, location in map(str.split, result.stdout.splitlines()))
    served = {key for key, location in redirects.items() if location == "-"}
    assert served == {(path, proto) for path in ("/api/health/", "/metrics") for proto in ("http", "https")} | {
        (path, "https") for path in ("/api/health/x", "/metrics/", "/api/users/all-users/", "/dashboard/")
    }
    assert redirects["/api/users/all-users/", "http"] == "https://presence.example.com/api/users/all-users/"
