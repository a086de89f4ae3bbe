"""HTTP and the presence WebSocket, in one ASGI application (daphne or uvicorn)."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "offchat_backend.settings.production")

# Django first: the consumers' modules import models.
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import OriginValidator  # noqa: E402

from users.realtime.garbage import CollectClosedSockets  # noqa: E402
from users.realtime.routing import allowed_origins, websocket_urlpatterns  # noqa: E402


class BrowserOriginValidator(OriginValidator):
    """Cross-site WebSocket hijacking is a browser's attack, and browsers always send
    Origin: a browser page from another site is refused; a client that is no browser (it
    sends no Origin) is let through, its token decides."""

    def valid_origin(self, parsed_origin):
        return parsed_origin is None or self.validate_origin(parsed_origin)


application = ProtocolTypeRouter(
    {
        "http": django_application,
        "websocket": CollectClosedSockets(BrowserOriginValidator(URLRouter(websocket_urlpatterns), allowed_origins())),
    }
)

from django.conf import settings  # noqa: E402

gc.set_threshold(*settings.ASGI_GC_THRESHOLDS)
if settings.ASGI_GC_FREEZE:
    gc.collect()
    gc.freeze()
