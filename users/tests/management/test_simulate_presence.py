import pytest
from django.core.management import CommandError, call_command
from rest_framework.throttling import AnonRateThrottle, ScopedRateThrottle

from offchat_backend.tests.support import AsgiServer
from users.models import PresenceSession, ReportedStatus, SessionEndReason, User
from users.presence_rules import effective_status

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def development_login_rates(monkeypatch):
    """As in development settings: every demo login comes from 127.0.0.1."""
    monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "login", "6000/min")
    monkeypatch.setitem(AnonRateThrottle.THROTTLE_RATES, "anon", "6000/min")


def test_demo_users_log_in_heartbeat_go_idle_and_log_out_through_the_http_api(live_server, settings, capsys):
    settings.DEBUG = True
    call_command("simulate_presence", users=10, duration=6, interval=0.5, url=live_server.url, seed=7, prefix="sim")

    out = capsys.readouterr().out
    assert "Done: 5 online, 2 away, 2 logged out, 1 silent" in out
    assert "0 errors." in out
    demo = User.objects.filter(username__startswith="sim-")
    assert demo.count() == 10
    # Every demo user logged in through the API: one session each, with the client's user agent.
    sessions = PresenceSession.objects.filter(user__in=demo)
    assert sessions.count() == 10
    assert all(session.user_agent.startswith("python-requests/") for session in sessions)
    logged_out = sessions.filter(end_reason=SessionEndReason.LOGOUT, revoked_at__isnull=False)
    assert sorted(logged_out.values_list("user__username", flat=True)) == ["sim-003", "sim-009"]
    away = sessions.filter(ended_at__isnull=True, reported_status=ReportedStatus.AWAY)
    assert sorted(away.values_list("user__username", flat=True)) == ["sim-002", "sim-007"]


def test_a_second_run_reuses_the_demo_accounts(live_server, settings):
    settings.DEBUG = True
    for _ in range(2):
        call_command("simulate_presence", users=2, duration=1, url=live_server.url, prefix="again")
    assert User.objects.filter(username__startswith="again-").count() == 2


def test_refuses_to_run_without_debug(settings):
    settings.DEBUG = False
    with pytest.raises(CommandError, match="DEBUG off"):
        call_command("simulate_presence", users=1, duration=1)
    assert not User.objects.exists()


def test_transport_ws_keeps_the_demo_users_present_over_sockets_not_heartbeats(tmp_path, settings, capsys):
    """--transport ws: logins over HTTP, then a socket per user (pings, a status frame when
    the idle user turns away), a logout over HTTP that closes the leaver's socket; not one
    heartbeat request."""
    settings.DEBUG = True
    # The demo accounts' password must verify in the server, whose settings do not know MD5.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    asgi = AsgiServer(tmp_path, PRESENCE_PUSH_INTERVAL="0.2")
    try:
        call_command(
            "simulate_presence",
            users=4,
            # Logins (PBKDF2 in the server) count against the duration: on a loaded machine four
            # took most of 4 s, and the behaviours had no time left to happen.
            duration=10,
            interval=0.5,
            url=f"http://127.0.0.1:{asgi.port}",
            seed=7,
            prefix="ws",
            transport="ws",
        )
        out = capsys.readouterr().out
        demo = User.objects.filter(username__startswith="ws-")
        shown = {user.username: effective_status(user=user) for user in demo}
        sessions = {session.user.username: session for session in PresenceSession.objects.filter(user__in=demo)}
    finally:
        asgi.stop()
    log = asgi.output()

    assert "Done: 2 online, 1 away, 1 logged out, 0 silent" in out, out
    assert "0 errors." in out
    # Behaviours in turn: steady, idle, leaver, steady.
    assert shown == {"ws-001": "online", "ws-002": "away", "ws-003": "offline", "ws-004": "online"}
    assert sessions["ws-002"].reported_status == ReportedStatus.AWAY  # a status frame said so
    assert (sessions["ws-003"].end_reason, sessions["ws-003"].revoked_at is not None) == (SessionEndReason.LOGOUT, True)
    assert all(sessions[name].ended_at is None for name in ("ws-001", "ws-002", "ws-004"))
    assert log.count("event=socket_opened") == 4
    assert log.count("POST /api/users/login/") == 4
    assert "/api/users/heartbeat/" not in log
    assert "Traceback" not in log


def test_transport_is_http_unless_asked(live_server, settings, capsys):
    settings.DEBUG = True
    call_command("simulate_presence", users=1, duration=1, url=live_server.url, prefix="plain")
    assert " frames, " not in capsys.readouterr().out
    with pytest.raises(CommandError):
        call_command("simulate_presence", users=1, duration=1, transport="carrier-pigeon")
