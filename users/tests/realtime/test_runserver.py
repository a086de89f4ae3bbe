"""The embedded default: `python manage.py runserver` with development settings serves the
presence socket too, on SQLite, with no Redis and no other server."""

import json
import subprocess

import pytest
from websockets.sync.client import connect

from offchat_backend.tests.support import REPO, VENV_BIN, ProjectProcess, api_request, clean_env, free_port


@pytest.fixture
def runserver(tmp_path):
    port = free_port()
    env = clean_env(DJANGO_SETTINGS_MODULE="offchat_backend.settings.development", LOCAL_STATE_DIR=str(tmp_path))
    manage = [str(VENV_BIN / "python"), "manage.py"]
    subprocess.run([*manage, "migrate", "--no-input", "-v0"], cwd=REPO, env=env, check=True)
    subprocess.run([*manage, "create_demo_admin"], cwd=REPO, env=env, check=True, capture_output=True)
    server = ProjectProcess(
        [*manage, "runserver", "--noreload", f"127.0.0.1:{port}", "--settings=offchat_backend.settings.development"],
        env=env,
        log_path=tmp_path / "runserver.log",
    )
    server.wait_for(lambda: api_request(port, "/api/health/", host="127.0.0.1")[0] != 0, timeout=30)
    yield port, server
    server.stop()


def test_runserver_serves_the_socket_on_the_embedded_defaults(runserver):
    port, server = runserver
    status, tokens = api_request(
        port, "/api/users/login/", host="127.0.0.1", body={"username": "admin", "password": "admin"}
    )
    assert status == 200, tokens
    with connect(f"ws://127.0.0.1:{port}/ws/presence/?token={tokens['access']}") as socket:
        hello = json.loads(socket.recv(timeout=10))
        assert (hello["type"], hello["is_staff"]) == ("hello", True)
        socket.send(json.dumps({"type": "ping"}))
        assert json.loads(socket.recv(timeout=5)) == {"type": "pong"}
    assert "ASGI/Daphne" in server.output() or "daphne" in server.output().lower()
    assert tokens["access"] not in server.output()
