"""The live presence dashboard: static pages whose script talks to the REST API.

The pages hold no data and need no Django login: the script signs in through
/api/users/login/ like any frontend and keeps its JWT in sessionStorage (gone with the tab).
Staff-only data stays behind the API's own permission checks.
"""

from django.conf import settings
from django.views.generic import TemplateView


class DashboardPage(TemplateView):
    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "poll_interval": settings.DASHBOARD_POLL_INTERVAL}
