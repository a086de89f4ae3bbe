from django.conf import settings
from django.urls import path

from users.realtime.consumers import PresenceConsumer

websocket_urlpatterns = [path("ws/presence/", PresenceConsumer.as_asgi())]


def allowed_origins() -> list[str]:
    """Browser pages that may open a socket: this site's hosts (ALLOWED_HOSTS) and the
    frontends allowed cross-origin (CORS_ALLOWED_ORIGINS)."""
    return [*settings.ALLOWED_HOSTS, *settings.CORS_ALLOWED_ORIGINS]
