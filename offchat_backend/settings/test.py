"""pytest settings: the environment picks the database and Redis, as in production.

With no DATABASE_URL the suite runs on SQLite and skips what needs PostgreSQL or Redis
(see conftest.py); CI sets DATABASE_URL, REDIS_URL and OFFCHAT_REQUIRE_SERVICES=1.
"""

from .base import *  # noqa: F403

SECRET_KEY = "test-only-secret-key-with-enough-length-to-pass-the-hmac-checks"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost", "127.0.0.1"]
# Hashing with PBKDF2 dominates a login; tests log in a lot.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Tests read what a request wrote as soon as it answers; the tests of the deferred write
# (users/tests/services/test_presence.py) and of a server with it turn it on.
PRESENCE_WRITE_BATCH_INTERVAL = env.float("PRESENCE_WRITE_BATCH_INTERVAL", default=0.0)  # noqa: F405
# The same for the heartbeat's throttle: counted in Redis in each request, except in the tests
# of counting in batches (users/tests/api/test_throttling.py).
THROTTLE_HEARTBEAT_BATCH_INTERVAL = env.float("THROTTLE_HEARTBEAT_BATCH_INTERVAL", default=0.0)  # noqa: F405

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not SQLite's shared in-memory database: the live server's threads (the dashboard's
    # and simulate_presence's tests) then have connections of their own and wait on SQLite's
    # locks, instead of sharing one connection, which fails under concurrent requests.
    DATABASES["default"]["TEST"] = {"NAME": str(LOCAL_STATE_DIR / "test-db.sqlite3")}  # noqa: F405
