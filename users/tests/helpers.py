"""Shared test helpers: API clients, endpoint URLs and small readers of the stored state.
Fixtures stay in conftest.py; process and server helpers in offchat_backend/tests/support.py."""

import itertools
import json
import threading
import time

from django.db import connection, connections
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken
from websockets.exceptions import ConnectionClosed

from users.models import OnlineStatus, PresenceSession, User
from users.tests.factories import PASSWORD, UserFactory

LOGIN = "/api/users/login/"
REFRESH = "/api/users/token/refresh/"
LOGOUT = "/api/users/logout/"
HEARTBEAT = "/api/users/heartbeat/"
ALL_USERS = "/api/users/all-users/"
ADMIN_USERS = "/api/users/admin/users/"
ADMIN_ONLINE = "/api/users/admin/users/online/"
ME = "/api/users/me/"
MY_PRESENCE = "/api/users/me/presence/"
MY_SESSIONS = "/api/users/me/sessions/"
HEALTH = "/api/health/"
SUMMARY = "/api/users/admin/users/summary/"


def status_url(user_id):
    return f"/api/users/admin/users/{user_id}/online-status/"


def set_status_url(user_id):
    return f"/api/users/admin/users/{user_id}/set-online-status/"


def admin_sessions_url(user_id):
    return f"/api/users/admin/users/{user_id}/sessions/"


def client_with_token(access):
    """An API client that sends `access` as its Bearer token, as a logged-in browser does."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def client_for(user):
    """An API client with a real access token of `user`, from a real login (a new session)."""
    from users.services import auth

    return client_with_token(auth.log_in(user=user).access)


def log_in(api_client, user_or_username, password=PASSWORD, address=None):
    """POST to the login endpoint, as `user_or_username`, optionally from the client address `address`."""
    username = getattr(user_or_username, "username", user_or_username)
    extra = {} if address is None else {"REMOTE_ADDR": address}
    return api_client.post(LOGIN, {"username": username, "password": password}, format="json", **extra)


def assert_json(response, status_code):
    """`response` has `status_code` and a JSON body; returns the body."""
    assert response.status_code == status_code, response.content
    assert response["Content-Type"] == "application/json"
    return response.json()


# Every API error is answered as JSON: the name the error tests read best with.
assert_json_error = assert_json


def stored(user):
    """The user's stored status column and last_seen, read fresh from the database."""
    user = User.objects.get(pk=user.pk)
    return user.online_status, user.last_seen


def session_of(access):
    """The presence session an access token belongs to."""
    return PresenceSession.objects.get(pk=AccessToken(access)["sid"])


# --- Presence sockets (users/tests/realtime) -------------------------------------------------------
def frames(socket, *, until, timeout=5.0):
    """Frames received until one satisfies `until` (returned last); fails after `timeout`."""
    received, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            frame = json.loads(socket.recv(timeout=max(0.01, deadline - time.monotonic())))
        except TimeoutError:
            break
        received.append(frame)
        if until(frame):
            return received
    raise AssertionError(f"no such frame in {timeout}s; got {received}")


def closed_with(socket, *, timeout=5.0):
    """(close code, the code of the error frame the server sent just before closing)."""
    deadline, last = time.monotonic() + timeout, None
    try:
        while time.monotonic() < deadline:
            last = json.loads(socket.recv(timeout=max(0.01, deadline - time.monotonic())))
    except ConnectionClosed as closed:
        assert last is not None and last["type"] == "error", last
        return closed.rcvd.code, last["code"]
    raise AssertionError("the socket stayed open")


def errors_in(log):
    """A server's error lines, less the start-up probe's: health is 503 until a sweep ran (no
    worker runs beside the test servers)."""
    return [
        line
        for line in log.splitlines()
        if ("ERROR" in line or "Traceback" in line or "level=error" in line)
        and "Service Unavailable: /api/health/" not in line
    ]


def send(socket, frame):
    socket.send(json.dumps(frame))


def reply(socket, frame):
    send(socket, frame)
    return json.loads(socket.recv(timeout=5))


def users_in_every_state(*, now, ages, manual_statuses) -> list[User]:
    """One user per stored status, age of last_seen, age of last_active (None: never) and
    manual status: the grids over which a rule's forms are checked against each other."""
    return [
        UserFactory(
            online_status=stored,
            last_seen=None if seen is None else now - seen,
            last_active=None if active is None else now - active,
            manual_status=manual,
        )
        for stored, seen, active, manual in itertools.product(OnlineStatus.values, ages, ages, manual_statuses)
    ]


def race(attempt, *, expected=(), racers=2) -> list[str]:
    """Runs `attempt` in `racers` threads released at once, each on its own database
    connection. Each run's outcome: what `attempt` returned, the class name of an `expected`
    exception it raised, or the repr of any other (a 500 for a client), sorted."""
    start = threading.Barrier(racers)
    outcomes = []

    def run():
        start.wait(timeout=10)
        try:
            outcomes.append(attempt())
        except expected as refused:
            outcomes.append(type(refused).__name__)
        except Exception as unexpected:
            outcomes.append(repr(unexpected))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    return sorted(outcomes)


def planned_without_seqscan(sql, params=()):
    """The plan PostgreSQL picks when a sequential scan is off: on a tiny test table this asks
    whether an index is usable at all, not whether it is the cheapest path today."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())
