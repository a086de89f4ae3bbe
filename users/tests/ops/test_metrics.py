import time
from datetime import timedelta

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from users.ops.metrics import HEARTBEATS
from users.services import presence
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db
METRICS = "/metrics"


def scrape(client, **headers) -> dict:
    response = client.get(METRICS, **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def test_users_per_status_and_the_sweeps_come_from_the_database(client):
    presence.start_session(user=UserFactory())
    presence.start_session(user=UserFactory(), at=timezone.now() - timedelta(hours=1))
    presence.mark_inactive_users_offline()
    presence.mark_inactive_users_offline()

    samples = scrape(client)

    assert samples[("offchat_presence_users", (("status", "online"),))] == 1
    assert samples[("offchat_presence_users", (("status", "away"),))] == 0
    assert samples[("offchat_presence_users", (("status", "offline"),))] == 1
    assert samples[("offchat_presence_sweeps_total", ())] == 2
    assert samples[("offchat_presence_sweep_users_marked_offline_total", ())] == 1
    assert samples[("offchat_presence_last_sweep_users_marked_offline", ())] == 0
    assert samples[("offchat_presence_last_sweep_duration_seconds", ())] > 0
    assert samples[("offchat_presence_last_sweep_timestamp_seconds", ())] == pytest.approx(
        timezone.now().timestamp(), abs=60
    )


def test_heartbeats_are_counted_by_reported_status(user_client):
    before = HEARTBEATS.labels(status="away")._value.get()
    user_client.post("/api/users/heartbeat/", {"status": "away"}, format="json")
    user_client.post("/api/users/heartbeat/", {"status": "away"}, format="json")
    user_client.post("/api/users/heartbeat/", {"status": "bogus"}, format="json")  # 400: not counted

    samples = scrape(user_client)
    assert samples[("offchat_presence_heartbeats_total", (("status", "away"),))] == before + 2


def test_logins_are_counted_by_outcome(api_client, user):
    api_client.post("/api/users/login/", {"username": user.username, "password": "wrong"}, format="json")
    samples = scrape(api_client)
    assert samples[("offchat_logins_total", (("outcome", "failure"),))] >= 1


def test_a_configured_token_is_required(client, settings):
    settings.METRICS_TOKEN = "scrape-secret"
    assert client.get(METRICS).status_code == 401
    assert client.get(METRICS, HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert ("offchat_presence_sweeps_total", ()) in scrape(client, HTTP_AUTHORIZATION="Bearer scrape-secret")


def test_only_get_is_allowed(client):
    assert client.post(METRICS).status_code == 405


def metric_samples(text: str) -> dict:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.django_db(transaction=True)
def test_an_open_socket_shows_up_in_its_asgi_servers_metrics(tmp_path):
    """Socket gauges are per process: the ASGI server holding the sockets counts them (every
    connection, and apart those authenticated), and counts them out once they close (then a
    session waits out the grace period)."""
    import json

    from websockets.sync.client import connect

    from offchat_backend.tests.support import AsgiServer
    from users.services import auth
    from users.tests.factories import StaffFactory

    asgi = AsgiServer(tmp_path, PRESENCE_PUSH_INTERVAL="0.2", PRESENCE_DISCONNECT_GRACE="30")
    try:
        staff, user = StaffFactory(), UserFactory()

        def sockets():
            status, text = asgi.http("/metrics")
            assert status == 200, text
            samples = metric_samples(text)
            return {
                name: samples[(f"offchat_presence_{name}", ())]
                for name in ("connections", "sockets", "socket_sessions", "staff_sockets", "sockets_in_grace")
            }

        assert sockets() == dict.fromkeys(sockets(), 0)
        with connect(asgi.ws_url(f"?token={auth.log_in(user=staff).access}")) as staff_socket:
            assert json.loads(staff_socket.recv(timeout=5))["type"] == "hello"
            with (
                connect(asgi.ws_url(f"?token={auth.log_in(user=user).access}")) as socket,
                connect(asgi.ws_url()) as not_authenticated_yet,
            ):
                assert json.loads(socket.recv(timeout=5))["type"] == "hello"
                not_authenticated_yet.send(json.dumps({"type": "ping"}))
                assert json.loads(not_authenticated_yet.recv(timeout=5))["type"] == "pong"
                assert sockets() == {
                    "connections": 3,
                    "sockets": 2,
                    "socket_sessions": 2,
                    "staff_sockets": 1,
                    "sockets_in_grace": 0,
                }
            deadline = time.monotonic() + 5
            while sockets()["connections"] != 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert sockets() == {
                "connections": 1,
                "sockets": 1,
                "socket_sessions": 1,
                "staff_sockets": 1,
                "sockets_in_grace": 1,
            }
        assert "offchat_presence_pushes_total" in asgi.http("/metrics")[1]
    finally:
        asgi.stop()


def test_a_process_without_sockets_reports_zero(client):
    samples = scrape(client)
    assert samples[("offchat_presence_sockets", ())] == 0
    assert samples[("offchat_presence_pushes_total", ())] >= 0
