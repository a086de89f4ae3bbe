"""Settings shared by every environment. Everything configurable comes from the environment."""

from datetime import timedelta
from pathlib import Path

import environ
import orjson
from corsheaders.defaults import default_headers as default_cors_headers
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
# A local `.env` is a convenience for development; real deployments set the environment.
# Variables already set win over the file.
if env.bool("READ_DOT_ENV_FILE", default=True):
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Where the embedded defaults (SQLite, filesystem broker, beat schedule) keep their files.
# Settings only name folders; the processes that use them make them (offchat_backend.local_state).
LOCAL_STATE_DIR = Path(env.str("LOCAL_STATE_DIR", default=str(BASE_DIR / "var")))

DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[])

INSTALLED_APPS = [
    # First: its runserver serves the presence WebSocket too (ASGI), with no other server.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "channels",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "users",
    "dashboard",
]

MIDDLEWARE = [
    "offchat_backend.middleware.AsgiConnectionClosingMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Before anything that can answer on its own, so that those answers carry CORS headers too.
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "users.api.middleware.PresenceMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "offchat_backend.urls"
WSGI_APPLICATION = "offchat_backend.wsgi.application"
ASGI_APPLICATION = "offchat_backend.asgi.application"
AUTH_USER_MODEL = "users.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# The largest request body accepted (413 past it, from the API). The API's bodies are a few
# hundred bytes; Django's 2.5 MB default would let one request make a worker parse megabytes.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=64 * 1024)

STATIC_URL = "static/"
# Where `collectstatic` gathers the files that gunicorn serves in production (whitenoise).
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}


# --- CORS (the browser frontend on another origin) --------------------------------
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
# The list endpoints' ETag must be readable, and If-None-Match sendable, from the frontend.
CORS_EXPOSE_HEADERS = ["ETag", "Retry-After"]
CORS_ALLOW_HEADERS = [*default_cors_headers, "if-none-match"]
CORS_URLS_REGEX = r"^/api/.*$"


# --- Database -----------------------------------------------------------------
# DATABASE_URL wins; otherwise DB_NAME (with DB_USER/DB_PASSWORD/DB_HOST/DB_PORT) selects
# PostgreSQL; otherwise an embedded SQLite file, so that a newcomer needs no server.
def _database_from_env():
    if env.str("DATABASE_URL", default=""):
        database = env.db("DATABASE_URL")
    elif env.str("DB_NAME", default=""):
        database = {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": env.str("DB_NAME"),
            "USER": env.str("DB_USER", default="postgres"),
            "PASSWORD": env.str("DB_PASSWORD", default=""),
            "HOST": env.str("DB_HOST", default="127.0.0.1"),
            "PORT": env.str("DB_PORT", default="5432"),
        }
    else:
        database = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(LOCAL_STATE_DIR / "db.sqlite3")}

    if database["ENGINE"] == "django.db.backends.sqlite3":
        # The web server and the Celery worker share the file: wait for locks instead of
        # failing, and take the write lock up front so that two writers cannot deadlock.
        database["OPTIONS"] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    else:
        database["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
        # A persistent connection that PostgreSQL dropped (restart, failover) is replaced
        # at the start of the next request instead of failing it.
        database["CONN_HEALTH_CHECKS"] = True
    return database


DATABASES = {"default": _database_from_env()}


# --- Cache and broker ---------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # A Redis that stopped answering must fail a call in seconds, not hang a worker.
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


# --- Presence -----------------------------------------------------------------
# Seconds. A user with no activity for PRESENCE_INACTIVITY_TIMEOUT is marked offline by the
# sweep, which runs every PRESENCE_SWEEP_INTERVAL; clients ping every PRESENCE_HEARTBEAT_INTERVAL.
PRESENCE_INACTIVITY_TIMEOUT = env.int("PRESENCE_INACTIVITY_TIMEOUT", default=120)
PRESENCE_SWEEP_INTERVAL = env.int("PRESENCE_SWEEP_INTERVAL", default=60)
PRESENCE_HEARTBEAT_INTERVAL = env.int("PRESENCE_HEARTBEAT_INTERVAL", default=30)
# A sweep running longer than this is stopped (its transaction rolls back; the next sweep does
# the work), and one that ignores that is killed PRESENCE_SWEEP_TIME_LIMIT + 30 s in. A sweep
# takes milliseconds; only a lock held elsewhere or a stuck connection makes it this slow.
PRESENCE_SWEEP_TIME_LIMIT = env.int("PRESENCE_SWEEP_TIME_LIMIT", default=max(PRESENCE_SWEEP_INTERVAL, 30))
# Activity (heartbeats, other requests) rewrites a row that is already online only when its
# last_seen is at least this old. Just under the heartbeat interval, so that every heartbeat
# still moves last_seen while a burst of API calls costs one write, not one per request.
PRESENCE_WRITE_GRANULARITY = env.int("PRESENCE_WRITE_GRANULARITY", default=max(PRESENCE_HEARTBEAT_INTERVAL - 5, 0))
# Seconds a request's activity write that changes no status may wait, after the request has
# answered, to be written in one statement with the same process's others (PostgreSQL only;
# users.services.presence). 0 writes each in its request. A crash (not a graceful stop, which
# writes them) loses at most this much of them, and the clients' next heartbeats write again.
PRESENCE_WRITE_BATCH_INTERVAL = env.float("PRESENCE_WRITE_BATCH_INTERVAL", default=1.0)
# A connected user with no real input (a non-heartbeat request, a heartbeat saying online)
# for this long is away (Synapse's idle timer).
PRESENCE_AWAY_AFTER = env.int("PRESENCE_AWAY_AFTER", default=300)
# The change feed (?since=cursor) answers for cursors up to this old, and for at most this
# many changed users; past either the client reloads the full list.
PRESENCE_FEED_MAX_AGE = env.int("PRESENCE_FEED_MAX_AGE", default=24 * 60 * 60)
PRESENCE_FEED_MAX_CHANGES = env.int("PRESENCE_FEED_MAX_CHANGES", default=1000)
# Presence history (intervals per user, users per status each minute) is kept this many days.
PRESENCE_HISTORY_DAYS = env.int("PRESENCE_HISTORY_DAYS", default=30)
# Live presence (/ws/presence/, docs/realtime.md). Each ASGI process reads the change feed this
# often (seconds) and pushes what changed: the batching window.
PRESENCE_PUSH_INTERVAL = env.float("PRESENCE_PUSH_INTERVAL", default=1.0)
# A session whose last socket closed ends this long after, unless a socket comes back (a reload).
PRESENCE_DISCONNECT_GRACE = env.float("PRESENCE_DISCONNECT_GRACE", default=10.0)
# A socket that sends no frame for this long is closed (clients ping every heartbeat interval).
PRESENCE_WS_IDLE_TIMEOUT = env.float("PRESENCE_WS_IDLE_TIMEOUT", default=90.0)
# Seconds to send {"type": "auth"} when the token is not in the URL or the subprotocol.
PRESENCE_WS_AUTH_TIMEOUT = env.float("PRESENCE_WS_AUTH_TIMEOUT", default=10.0)
# Users one non-staff socket may follow (Slack's presence_sub).
PRESENCE_WS_MAX_SUBSCRIPTIONS = env.int("PRESENCE_WS_MAX_SUBSCRIPTIONS", default=500)
# Sockets one user may hold open in one ASGI process (tabs, devices); one more is closed 4429.
PRESENCE_WS_MAX_SOCKETS_PER_USER = env.int("PRESENCE_WS_MAX_SOCKETS_PER_USER", default=20)
# The ASGI process's garbage collector (offchat_backend/asgi.py; docs/realtime.md, "Capacity").
# A full collection visits every object of every open socket (~100 each): at 5,000 sockets it
# stopped the event loop for ~0.9 s of CPU every ~30 s, with Python's thresholds (700, 10, 10).
# What start-up loaded is frozen out of collections (it is never garbage), and a young collection
# waits for 50,000 new objects instead of 700: objects in flight (a ping being answered, a tick's
# querysets) die before it instead of being promoted, so full collections stop in steady state.
ASGI_GC_FREEZE = env.bool("ASGI_GC_FREEZE", default=True)
ASGI_GC_THRESHOLDS = env.list("ASGI_GC_THRESHOLDS", cast=int, default=[50_000, 20, 10])


# --- Celery -------------------------------------------------------------------
if REDIS_URL:
    CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
else:
    CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")

if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport: a broker made of a folder, for running with no server.
    # Its folders are made at start-up (offchat_backend.local_state), not here.
    _broker_dir = LOCAL_STATE_DIR / "celery-broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
    }

CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = env.str(
    "CELERY_BEAT_SCHEDULE_FILENAME", default=str(LOCAL_STATE_DIR / "celerybeat-schedule")
)
CELERY_BEAT_SCHEDULE = {
    "mark-inactive-users-offline": {
        "task": "users.tasks.check_and_mark_offline_users",
        "schedule": float(PRESENCE_SWEEP_INTERVAL),
        # Sweeps queued while no worker ran are worthless once the next one is due:
        # let them expire instead of replaying a backlog after an outage.
        "options": {"expires": float(PRESENCE_SWEEP_INTERVAL)},
    },
    # Without it the token blacklist tables grow by a row per login forever.
    # The timeline's points: users per status each minute.
    "record-presence-counts": {
        "task": "users.tasks.record_presence_counts",
        "schedule": 60.0,
        "options": {"expires": 60.0},
    },
    # Presence history past PRESENCE_HISTORY_DAYS.
    "prune-presence-history": {
        "task": "users.tasks.prune_presence_history",
        "schedule": 24 * 60 * 60.0,
        "options": {"expires": 60 * 60.0},
    },
    "flush-expired-tokens": {
        "task": "users.tasks.flush_expired_tokens",
        "schedule": 24 * 60 * 60.0,
        "options": {"expires": 60 * 60.0},
    },
}
# Celery's file scheduler, making the schedule file's folder when beat first opens it.
CELERY_BEAT_SCHEDULER = "offchat_backend.local_state:FolderMakingScheduler"


# --- REST framework and JWT ---------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["users.api.authentication.SessionJWTAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON through orjson both ways (offchat_backend.parsers): the standard library's encoder
    # wrote a change feed's 500 rows in a tenth of the poll (bench/analysis.md, row 6).
    # Integer keys become strings, as with json.
    "DEFAULT_RENDERER_CLASSES": ["drf_orjson_renderer.renderers.ORJSONRenderer"],
    "ORJSON_RENDERER_OPTIONS": (orjson.OPT_NON_STR_KEYS,),
    "DEFAULT_PARSER_CLASSES": ["offchat_backend.parsers.BoundedJSONParser"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "users.api.pagination.UserPagination",
    "PAGE_SIZE": 50,
    # DRF's throttles, letting requests through while the cache is unreachable (users.api.throttling).
    "DEFAULT_THROTTLE_CLASSES": [
        "users.api.throttling.AnonRateThrottle",
        "users.api.throttling.UserRateThrottle",
        "users.api.throttling.ScopedRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("THROTTLE_RATE_ANON", default="120/min"),
        "user": env.str("THROTTLE_RATE_USER", default="1200/min"),
        # Login per client address, and per username from any address: an online guessing
        # attack gets at most 720 tries a day on one account, and a victim of it waits at
        # most an hour.
        "login": env.str("THROTTLE_RATE_LOGIN", default="20/min"),
        "login_username": env.str("THROTTLE_RATE_LOGIN_USERNAME", default="30/hour"),
        # Per user, over all their devices: a client sends 2 a minute; a runaway loop is cut
        # off without slowing anyone else.
        "heartbeat": env.str("THROTTLE_RATE_HEARTBEAT", default="30/min"),
        # Password changes per user: each checks the current password, which a stolen access
        # token must not turn into a way to guess it.
        "password_change": env.str("THROTTLE_RATE_PASSWORD_CHANGE", default="10/hour"),
    },
    "EXCEPTION_HANDLER": "offchat_backend.exception_handler.handle_api_exception",
    "DEFAULT_SCHEMA_CLASS": "offchat_backend.openapi.AutoSchema",
    # How many proxies in front of gunicorn append to X-Forwarded-For. Throttling keys on the
    # client address; with 0 it is the socket's peer, which a client cannot forge.
    "NUM_PROXIES": env.int("NUM_PROXIES", default=0),
}

# Seconds between a process's additions of its heartbeat counts to the shared (Redis) count
# (users.api.throttling, HeartbeatRateThrottle): one process refuses a client at once, a
# client spread over several processes is refused within this interval. 0 counts each
# heartbeat in Redis in its request.
THROTTLE_HEARTBEAT_BATCH_INTERVAL = env.float("THROTTLE_HEARTBEAT_BATCH_INTERVAL", default=1.0)

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_TOKEN_MINUTES", default=15)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_TOKEN_DAYS", default=7)),
    # A refresh token is single-use: the old one is blacklisted when a new one is issued.
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "AUTH_HEADER_TYPES": ("Bearer",),
    "TOKEN_REFRESH_SERIALIZER": "users.api.serializers.auth.TokenRefreshSerializer",
}


SPECTACULAR_SETTINGS = {
    "TITLE": "OffChat presence API",
    "DESCRIPTION": (
        "Who is online, away or offline. Log in for a JWT pair, send it as `Authorization: Bearer "
        '<access>`, heartbeat every `heartbeat_interval` seconds. Errors are JSON: `{"detail": ...}` '
        "or, for invalid input, an object of field names to messages."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "OnlineStatusEnum": "users.models.OnlineStatus",
        "ReportedStatusEnum": "users.models.ReportedStatus",
    },
    # Swagger UI's files come from the drf-spectacular-sidecar package, not from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}


# --- Operations -----------------------------------------------------------------
# /metrics answers only with `Authorization: Bearer <METRICS_TOKEN>` when it is set.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# With several gunicorn workers, each counts in its own process; prometheus-client sums them
# through files in this folder (it reads the variable itself; offchat_backend.local_state
# makes the folder at start-up).
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
# The dashboard polls the API this often (seconds).
DASHBOARD_POLL_INTERVAL = env.int("DASHBOARD_POLL_INTERVAL", default=10)


# --- Logging ------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# plain: readable lines for a terminal; json: one JSON object per line for a log pipeline.
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        "users": {"level": LOG_LEVEL},
        "celery": {"level": "INFO"},
    },
}


def require(condition, message):
    """Fail start-up with a clear message instead of running misconfigured."""
    if not condition:
        raise ImproperlyConfigured(message)
