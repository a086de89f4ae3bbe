"""Local development: runs with no environment at all (SQLite, filesystem broker)."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)
# Not a secret: development only. Production has no default and refuses to start without one.
SECRET_KEY = env.str("SECRET_KEY", default="development-only-insecure-key-do-not-use-in-production")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
