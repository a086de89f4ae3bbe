"""Development settings that also serve the dashboard's static files, for the end-to-end
test's ASGI server. Nothing serves /static/ under daphne's command line, DEBUG or not (only
`manage.py runserver` adds a static files handler), so whitenoise serves them as it does in
production, here straight from the apps' folders (its finders: no collectstatic needed)."""

from offchat_backend.settings.development import *  # noqa: F403
from offchat_backend.settings.development import MIDDLEWARE

MIDDLEWARE = [MIDDLEWARE[0], "whitenoise.middleware.WhiteNoiseMiddleware", *MIDDLEWARE[1:]]
WHITENOISE_USE_FINDERS = True
# The test settings hash with MD5 (fast): the users the test makes must sign in here too.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
