"""The ASGI servers themselves: the one Compose runs (daphne, its `ws` service's command as
written) and uvicorn, measured against it in bench/ws.py. A token in `?token=` must never reach
a server's output: uvicorn logs WebSocket paths with their query string at INFO even with
`--no-access-log`, so it runs with `--log-level warning` here."""

import json
import time

import pytest
import yaml
from websockets.sync.client import connect

from offchat_backend.tests.support import (
    REPO,
    VENV_BIN,
    ProjectProcess,
    api_request,
    clean_env,
    free_port,
    session_database_env,
)
from users.services import auth
from users.tests.factories import StaffFactory, UserFactory
from users.tests.helpers import frames

pytestmark = pytest.mark.django_db(transaction=True)


def compose_ws_command(port):
    words = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["ws"]["command"]
    words = ["--bind=127.0.0.1" if word.startswith("--bind=") else word for word in words]
    words = [f"--port={port}" if word.startswith("--port=") else word for word in words]
    return [str(VENV_BIN / words[0]), *words[1:]]


def uvicorn_command(port):
    return [
        str(VENV_BIN / "uvicorn"), "offchat_backend.asgi:application", "--host", "127.0.0.1", "--port", str(port),
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


@pytest.fixture
def start(tmp_path, settings):
    processes = []

    def run(command_for, **env):
        port = free_port()
        config = {
            "DJANGO_SETTINGS_MODULE": "offchat_backend.settings.development",
            "DATABASE_URL": session_database_env(),
            "LOCAL_STATE_DIR": str(tmp_path / f"state-{len(processes)}"),
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECRET_KEY": settings.SECRET_KEY,
            "PRESENCE_PUSH_INTERVAL": "0.2",
            "LOG_LEVEL": "INFO",
            **env,
        }
        process = ProjectProcess(
            command_for(port), env=clean_env(**config), log_path=tmp_path / f"server-{len(processes)}.log"
        )
        processes.append(process)
        process.port = port
        process.wait_for(lambda: api_request(port, "/api/health/", host="127.0.0.1")[0] != 0, timeout=30)
        return process

    yield run
    for process in processes:
        process.stop()


def core_flow(port):
    """hello, ping -> pong, and a change pushed to a staff socket; returns the tokens used."""
    staff, user = StaffFactory(), UserFactory()
    staff_token, user_issued = auth.log_in(user=staff).access, auth.log_in(user=user)
    url = f"ws://127.0.0.1:{port}/ws/presence/"
    with connect(f"{url}?token={staff_token}") as listener:
        hello = json.loads(listener.recv(timeout=5))
        assert (hello["type"], hello["is_staff"]) == ("hello", True)
        listener.send(json.dumps({"type": "ping"}))
        assert json.loads(listener.recv(timeout=5)) == {"type": "pong"}
        with connect(f"{url}?token={user_issued.access}") as socket:
            assert json.loads(socket.recv(timeout=5))["type"] == "hello"
            socket.send(json.dumps({"type": "status", "status": "away"}))
            assert json.loads(socket.recv(timeout=5))["online_status"] == "away"
            changes = frames(
                listener,
                until=lambda f: f["type"] == "user_status_change" and f["user_id"] == str(user.pk)
                and f["online_status"] == "away",
            )  # fmt: skip
            assert changes
    return [staff_token, user_issued.access]


def test_daphne_as_compose_runs_it_serves_the_socket_and_keeps_tokens_out_of_its_output(start):
    daphne = start(compose_ws_command)
    tokens = core_flow(daphne.port)
    time.sleep(0.5)
    output = daphne.output()
    assert not any(token in output for token in tokens), output


def test_uvicorn_runs_the_core_socket_flow_without_tokens_in_its_output(start):
    uvicorn = start(uvicorn_command)
    tokens = core_flow(uvicorn.port)
    time.sleep(0.5)
    output = uvicorn.output()
    assert not any(token in output for token in tokens), output
    assert "token=" not in output
