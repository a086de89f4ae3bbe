import pytest

from offchat_backend.tests.support import AsgiServer

# Short intervals, so that tests wait seconds, not minutes.
FAST = {"PRESENCE_PUSH_INTERVAL": "0.2", "PRESENCE_DISCONNECT_GRACE": "1", "PRESENCE_WS_AUTH_TIMEOUT": "5"}


@pytest.fixture
def server(tmp_path):
    """Starts ASGI servers (daphne by default: `kind` for another AsgiServer class) on the test
    session's database, with FAST settings unless overridden; stops them after the test."""
    servers = []

    def start(name=None, kind=AsgiServer, **env):
        servers.append(kind(tmp_path, name=name or f"asgi-{len(servers)}", **{**FAST, **env}))
        return servers[-1]

    yield start
    for started in servers:
        started.stop()
