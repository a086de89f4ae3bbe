"""Which WebSocket paths the ASGI application serves (users/realtime/routing.py), through a real
daphne and real clients."""

import json

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from users.services import auth
from users.tests.factories import UserFactory
from users.tests.helpers import closed_with, errors_in

pytestmark = pytest.mark.django_db(transaction=True)

UNKNOWN_PATHS = ("/ws/chat/", "/ws/presence/extra/", "/ws/")


def test_a_socket_at_any_other_path_is_closed_4404_with_one_info_line_and_no_traceback(server):
    asgi = server(CORS_ALLOWED_ORIGINS="http://localhost:5173")
    for path in UNKNOWN_PATHS:
        with connect(f"ws://127.0.0.1:{asgi.port}{path}?token=not-for-the-log") as socket:
            assert closed_with(socket) == (4404, "not_found")
    # The origin check still comes first: a foreign page is refused at the handshake, and not logged.
    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{asgi.port}/ws/chat/", origin="https://evil.example")
    assert refused.value.response.status_code == 403
    with connect(asgi.ws_url(f"?token={auth.log_in(user=UserFactory()).access}")) as socket:
        assert json.loads(socket.recv(timeout=5))["type"] == "hello"

    log = asgi.output()
    logged = [line.split(" ", 2)[2] for line in log.splitlines() if "event=socket_not_found" in line]
    assert logged == [f"INFO users.realtime.consumers event=socket_not_found path={path}" for path in UNKNOWN_PATHS]
    assert errors_in(log) == [], log
    assert "not-for-the-log" not in log
