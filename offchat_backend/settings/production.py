"""Production: every secret and service comes from the environment, nothing is embedded."""

from .base import *  # noqa: F403
from .base import DATABASES, LOGGING, MIDDLEWARE, REDIS_URL, STORAGES, env, require

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY")  # no default: start-up fails without it
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")

require(
    DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql",
    "Production runs on PostgreSQL: set DATABASE_URL or DB_NAME/DB_USER/DB_PASSWORD/DB_HOST/DB_PORT.",
)
require(REDIS_URL, "Production needs Redis for the cache and the Celery broker: set REDIS_URL.")

# TLS ends at the proxy in front of gunicorn, which says so in X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
# Except for what is called over plain HTTP from inside the network, straight to gunicorn: a load
# balancer's health check, and Prometheus, which scrapes each instance (a redirect would send the
# scrape to the public name, hence to whichever instance the proxy picks). A token sent over plain
# HTTP has gone by the time any redirect answers, so redirecting /metrics would protect nothing.
# Regexes on the path without its leading slash; everything else keeps the redirect.
SECURE_REDIRECT_EXEMPT = [r"^api/health/$", r"^metrics$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True

# gunicorn serves the dashboard's files itself (whitenoise), from `collectstatic`'s output,
# with hashed, compressed names that browsers may cache forever.
_SECURITY = MIDDLEWARE.index("django.middleware.security.SecurityMiddleware")
MIDDLEWARE = [*MIDDLEWARE[: _SECURITY + 1], "whitenoise.middleware.WhiteNoiseMiddleware", *MIDDLEWARE[_SECURITY + 1 :]]
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"}}

# One JSON object per line, for the log pipeline; LOG_FORMAT=plain reads better by hand.
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
LOGGING["handlers"]["console"]["formatter"] = LOG_FORMAT
