"""Local development: runs with no environment at all (SQLite, filesystem broker)."""

from .base import *  # noqa: F403
from .base import MIDDLEWARE, REST_FRAMEWORK, env

DEBUG = env.bool("DEBUG", default=True)
# Not a secret: development only. Production has no default and refuses to start without one.
SECRET_KEY = env.str("SECRET_KEY", default="development-only-insecure-key-do-not-use-in-production")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
# The frontend's dev server (Vite).
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=["http://localhost:5173"])
# Every local client is 127.0.0.1: simulate_presence logs in many users from it.
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {
    **REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
    "anon": env.str("THROTTLE_RATE_ANON", default="6000/min"),
    "login": env.str("THROTTLE_RATE_LOGIN", default="6000/min"),
    "login_username": env.str("THROTTLE_RATE_LOGIN_USERNAME", default="6000/min"),
}
# DEBUG answers an unknown URL with Django's HTML 404 page; the API promises JSON errors.
# Before CommonMiddleware, whose APPEND_SLASH redirect must see the 404 first.
_COMMON = MIDDLEWARE.index("django.middleware.common.CommonMiddleware")
MIDDLEWARE = [*MIDDLEWARE[:_COMMON], "offchat_backend.middleware.JsonNotFoundMiddleware", *MIDDLEWARE[_COMMON:]]
