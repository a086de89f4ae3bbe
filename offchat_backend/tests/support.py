"""Helpers for tests that start the project's own processes (worker, gunicorn, settings)."""

import os
import socket
import sys
from pathlib import Path

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
    }
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
