"""Prometheus metrics at /metrics.

Counters of what the web processes do (heartbeats, logins) live in the process, or, with
PROMETHEUS_MULTIPROC_DIR set (several gunicorn workers), in files that every worker sums.
What the database knows (users per status, the sweeper's runs, which happen in the Celery
worker) is read at scrape time, so every web process reports the same figures. The presence
sockets are per process and only the ASGI process (the `ws` service) has any: scrape it apart
from gunicorn's; a gunicorn worker reports 0.
"""

import hmac

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from users.models import OnlineStatus
from users.realtime.garbage import CollectClosedSockets
from users.realtime.hub import HUB
from users.selectors.presence import last_sweep, status_counts

HEARTBEATS = Counter("offchat_presence_heartbeats", "Heartbeats received.", ["status"], registry=None)
LOGINS = Counter("offchat_logins", "Login attempts.", ["outcome"], registry=None)


class PresenceCollector:
    def collect(self):
        users = GaugeMetricFamily("offchat_presence_users", "Active users per shown status.", labels=["status"])
        counts = status_counts(now=timezone.now())
        for status in OnlineStatus.values:
            users.add_metric([status], counts[status])
        yield users

        sweep = last_sweep()
        yield CounterMetricFamily("offchat_presence_sweeps", "Sweeps completed.", value=sweep.sweeps_total)
        yield CounterMetricFamily(
            "offchat_presence_sweep_users_marked_offline",
            "Users the sweeps marked offline.",
            value=sweep.users_marked_offline_total,
        )
        yield GaugeMetricFamily(
            "offchat_presence_last_sweep_duration_seconds", "Duration of the last sweep.", value=sweep.duration_seconds
        )
        yield GaugeMetricFamily(
            "offchat_presence_last_sweep_users_marked_offline",
            "Users the last sweep marked offline.",
            value=sweep.users_marked_offline,
        )
        finished = sweep.finished_at.timestamp() if sweep.finished_at else 0
        yield GaugeMetricFamily(
            "offchat_presence_last_sweep_timestamp_seconds", "When the last sweep completed (0: never).", value=finished
        )


class SocketCollector:
    """This process's presence sockets, read from its hub at scrape time."""

    def collect(self):
        yield GaugeMetricFamily(
            "offchat_presence_connections",
            "Open WebSocket connections in this process, authenticated or not.",
            value=CollectClosedSockets.open,
        )
        yield GaugeMetricFamily(
            "offchat_presence_sockets",
            "Open, authenticated presence sockets in this process.",
            value=len(HUB.listeners),
        )
        yield GaugeMetricFamily(
            "offchat_presence_socket_sessions",
            "Sessions held open by this process's sockets.",
            value=len(HUB.by_session),
        )
        yield GaugeMetricFamily(
            "offchat_presence_staff_sockets",
            "Open presence sockets of staff users in this process.",
            value=len(HUB.staff),
        )
        yield GaugeMetricFamily(
            "offchat_presence_sockets_in_grace",
            "Sessions whose last socket closed, waiting PRESENCE_DISCONNECT_GRACE before they end.",
            value=len(HUB.grace_timers),
        )
        yield CounterMetricFamily(
            "offchat_presence_pushes",
            "Change batches pushed to a socket by this process.",
            value=HUB.pushes_sent,
        )


@require_GET
def metrics_view(request):
    token = settings.METRICS_TOKEN
    if token and not hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
        return HttpResponse(
            "Unauthorized: send Authorization: Bearer <METRICS_TOKEN>.\n", status=401, content_type="text/plain"
        )
    registry = CollectorRegistry()
    if settings.PROMETHEUS_MULTIPROC_DIR:
        MultiProcessCollector(registry)
    else:
        registry.register(HEARTBEATS)
        registry.register(LOGINS)
    registry.register(PresenceCollector())
    registry.register(SocketCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
