"""The live presence dashboard: static pages whose script talks to the REST API.

The pages hold no data and need no Django login: the script signs in through
/api/users/login/ like any frontend and keeps its JWT in sessionStorage (gone with the tab).
The presence page then follows changes through the presence socket (SOCKET_PATH), and polls
the change feed every DASHBOARD_POLL_INTERVAL seconds only while the socket is down.
Staff-only data stays behind the API's own permission checks.
"""

from django.conf import settings
from django.views.generic import TemplateView

from users.realtime.routing import websocket_urlpatterns

# The presence socket's path (users.realtime.routing), absolute: the page opens it on its own host.
SOCKET_PATH = "/" + str(websocket_urlpatterns[0].pattern)


class DashboardPage(TemplateView):
    def get_context_data(self, **kwargs):
        config = {"pollSeconds": settings.DASHBOARD_POLL_INTERVAL, "socketPath": SOCKET_PATH}
        return {**super().get_context_data(**kwargs), "config": config}
