from django.conf import settings
from django.urls import path, re_path

from users.realtime.consumers import PresenceConsumer, UnknownPathConsumer

websocket_urlpatterns = [
    path("ws/presence/", PresenceConsumer.as_asgi()),
    re_path(r"", UnknownPathConsumer.as_asgi()),  # any other path: closed 4404, not a 500
]


def allowed_origins() -> list[str]:
    """Browser pages that may open a socket: this site's hosts (ALLOWED_HOSTS) and the
    frontends allowed cross-origin (CORS_ALLOWED_ORIGINS)."""
    return [*settings.ALLOWED_HOSTS, *settings.CORS_ALLOWED_ORIGINS]
