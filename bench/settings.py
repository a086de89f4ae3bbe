"""Settings for the benchmark's gunicorn and in-process measurements: production's stack
(PostgreSQL, Redis, no DEBUG) without its HTTPS redirect, plus a no-op endpoint and switches
for the presence middleware and write coalescing. Never used outside bench/."""

from offchat_backend.settings.base import *  # noqa: F403
from offchat_backend.settings.base import INSTALLED_APPS, MIDDLEWARE, env

SECRET_KEY = env.str("SECRET_KEY", default="benchmark-only-secret-key-with-enough-length-for-hmac")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
ROOT_URLCONF = "bench.urls"
# The benchmark logs in thousands of clients from 127.0.0.1 and hammers the API on purpose:
# no throttles, except for the measurement of what they cost (BENCH_THROTTLES=1), where
# production's throttle classes count every request in Redis under rates no run can reach.
if env.bool("BENCH_THROTTLES", default=False):
    REST_FRAMEWORK = {
        **REST_FRAMEWORK,  # noqa: F405
        "DEFAULT_THROTTLE_RATES": dict.fromkeys(REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "1000000000/min"),  # noqa: F405
    }
else:
    REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": []}  # noqa: F405

if not env.bool("BENCH_PRESENCE_MIDDLEWARE", default=True):
    MIDDLEWARE = [name for name in MIDDLEWARE if name != "users.api.middleware.PresenceMiddleware"]

# django-online-users, for row 3's comparison (installed from bench/requirements.txt).
INSTALLED_APPS = [*INSTALLED_APPS, "online_users"]
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}
