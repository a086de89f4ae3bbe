"""Login, token refresh and logout (users.api.auth), and the log lines they write."""

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone
from rest_framework.throttling import ScopedRateThrottle

from users.models import OnlineStatus
from users.tests.factories import PASSWORD, UserFactory
from users.tests.helpers import (
    ALL_USERS,
    LOGIN,
    LOGOUT,
    REFRESH,
    assert_json_error,
    client_for,
    client_with_token,
    log_in,
    stored,
)

pytestmark = pytest.mark.django_db
WINDOW_START = "2026-03-11T12:00:05Z"
NOW = timezone.now().replace(microsecond=0)


class TestLogin:
    @time_machine.travel(NOW, tick=False)
    def test_returns_tokens_the_user_and_the_heartbeat_interval_and_marks_online(self, api_client, user):
        response = log_in(api_client, user)

        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"access", "refresh", "session_id", "user", "heartbeat_interval"}
        assert body["heartbeat_interval"] == settings.PRESENCE_HEARTBEAT_INTERVAL
        assert body["user"]["username"] == user.username
        assert body["user"]["online_status"] == "online"
        assert "password" not in body["user"]
        assert stored(user) == (OnlineStatus.ONLINE, NOW)
        assert client_with_token(body["access"]).get(ALL_USERS).status_code == 200

    def test_wrong_password_unknown_user_and_inactive_user_get_the_same_401(self, api_client, user):
        inactive = UserFactory(is_active=False)
        answers = [
            api_client.post(LOGIN, {"username": user.username, "password": "wrong"}, format="json"),
            api_client.post(LOGIN, {"username": "nobody-by-this-name", "password": PASSWORD}, format="json"),
            log_in(api_client, inactive),
        ]
        bodies = [assert_json_error(answer, 401) for answer in answers]
        assert bodies[0] == bodies[1] == bodies[2]
        assert stored(user)[0] == stored(inactive)[0] == OnlineStatus.OFFLINE

    def test_missing_fields_are_named(self, api_client):
        body = assert_json_error(api_client.post(LOGIN, {}, format="json"), 400)
        assert set(body) == {"username", "password"}

    def test_malformed_json_is_a_json_400(self, api_client):
        body = assert_json_error(api_client.post(LOGIN, "{not json", content_type="application/json"), 400)
        assert "JSON parse error" in body["detail"]

    def test_form_encoded_body_is_415(self, api_client, user):
        response = api_client.post(LOGIN, {"username": user.username, "password": PASSWORD})
        assert_json_error(response, 415)

    def test_get_is_405(self, api_client):
        assert_json_error(api_client.get(LOGIN), 405)

    def test_a_broken_authorization_header_does_not_block_login(self, api_client, user):
        api_client.credentials(HTTP_AUTHORIZATION="Bearer expired.or.garbage")
        assert log_in(api_client, user).status_code == 200

    # Inside one throttle window: the counts are per fixed minute.
    @time_machine.travel(WINDOW_START, tick=False)
    def test_brute_force_is_throttled_with_retry_after(self, api_client, user, monkeypatch):
        monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "login", "3/min")
        for _ in range(3):
            api_client.post(LOGIN, {"username": user.username, "password": "wrong"}, format="json")
        response = log_in(api_client, user)
        assert_json_error(response, 429)
        assert int(response["Retry-After"]) > 0
        assert stored(user)[0] == OnlineStatus.OFFLINE

    # Inside one throttle window: the counts are per fixed minute.
    @time_machine.travel(WINDOW_START, tick=False)
    def test_a_forged_forwarded_for_header_does_not_escape_the_throttle(self, api_client, user, monkeypatch):
        monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "login", "3/min")
        for forged in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
            api_client.post(
                LOGIN, {"username": user.username, "password": "wrong"}, format="json", HTTP_X_FORWARDED_FOR=forged
            )
        response = api_client.post(
            LOGIN, {"username": user.username, "password": PASSWORD}, format="json", HTTP_X_FORWARDED_FOR="10.0.0.4"
        )
        assert_json_error(response, 429)


class TestTokenRefresh:
    def test_returns_a_new_access_and_rotates_the_refresh_token(self, api_client, user):
        tokens = log_in(api_client, user).json()

        response = api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json")

        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"access", "refresh"}
        assert body["refresh"] != tokens["refresh"]
        assert client_with_token(body["access"]).get(ALL_USERS).status_code == 200
        # The old refresh token was single-use.
        assert_json_error(api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json"), 401)

    def test_blacklisted_refresh_token_is_401(self, api_client, user):
        tokens = log_in(api_client, user).json()
        client_with_token(tokens["access"]).post(LOGOUT, {"refresh": tokens["refresh"]}, format="json")
        assert_json_error(api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json"), 401)

    def test_expired_refresh_token_is_401(self, api_client, user):
        tokens = log_in(api_client, user).json()
        with time_machine.travel(timezone.now() + settings.SIMPLE_JWT["REFRESH_TOKEN_LIFETIME"] + timedelta(1)):
            assert_json_error(api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json"), 401)

    def test_garbage_and_missing_tokens(self, api_client):
        assert_json_error(api_client.post(REFRESH, {"refresh": "garbage"}, format="json"), 401)
        assert "refresh" in assert_json_error(api_client.post(REFRESH, {}, format="json"), 400)

    def test_access_token_is_not_a_refresh_token(self, api_client, user):
        tokens = log_in(api_client, user).json()
        assert_json_error(api_client.post(REFRESH, {"refresh": tokens["access"]}, format="json"), 401)

    @pytest.mark.parametrize("fate", ["deactivated", "deleted"])
    def test_refresh_token_of_a_deactivated_or_deleted_user_is_401(self, api_client, user, fate):
        tokens = log_in(api_client, user).json()
        if fate == "deleted":
            user.delete()
        else:
            user.is_active = False
            user.save()
        assert_json_error(api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json"), 401)


class TestLogout:
    @time_machine.travel(NOW, tick=False)
    def test_blacklists_the_refresh_token_and_marks_the_user_offline(self, api_client, user):
        tokens = log_in(api_client, user).json()
        client = client_with_token(tokens["access"])

        response = client.post(LOGOUT, {"refresh": tokens["refresh"]}, format="json")

        assert response.status_code == 200
        # The middleware saw an authenticated request, and still did not flip them back online.
        assert stored(user) == (OnlineStatus.OFFLINE, NOW)
        assert_json_error(client.post(LOGOUT, {"refresh": tokens["refresh"]}, format="json"), 401)

    def test_needs_authentication(self, api_client, user):
        tokens = log_in(api_client, user).json()
        assert_json_error(api_client.post(LOGOUT, {"refresh": tokens["refresh"]}, format="json"), 401)
        assert stored(user)[0] == OnlineStatus.ONLINE

    def test_blank_and_garbage_refresh(self, user_client):
        # No body at all is a logout of the current session (test_offchat_contract.py).
        assert "refresh" in assert_json_error(user_client.post(LOGOUT, {"refresh": ""}, format="json"), 400)
        assert_json_error(user_client.post(LOGOUT, {"refresh": "garbage"}, format="json"), 401)

    def test_cannot_log_out_somebody_else(self, api_client, user):
        victim = UserFactory()
        victim_tokens = log_in(api_client, victim).json()

        response = client_for(user).post(LOGOUT, {"refresh": victim_tokens["refresh"]}, format="json")

        assert_json_error(response, 403)
        assert stored(victim)[0] == OnlineStatus.ONLINE
        assert api_client.post(REFRESH, {"refresh": victim_tokens["refresh"]}, format="json").status_code == 200


# --- Structured logs of login and logout --------------------------------------------------
def events(caplog, name):
    return [record for record in caplog.records if getattr(record, "event", None) == name]


def test_login_and_logout_log_one_line_each_with_user_and_outcome(api_client, user, caplog):
    with caplog.at_level("INFO", logger="users"):
        tokens = api_client.post(LOGIN, {"username": user.username, "password": PASSWORD}, format="json").json()
        client_with_token(tokens["access"]).post(LOGOUT, {"refresh": tokens["refresh"]}, format="json")

    [login] = events(caplog, "login")
    assert (login.outcome, login.user_id, str(login.session_id)) == ("success", user.pk, tokens["session_id"])
    [logout] = events(caplog, "logout")
    assert (logout.outcome, logout.user_id, logout.status_after) == ("success", user.pk, "offline")


def test_failed_logins_and_logouts_are_logged_without_the_password(api_client, user, user_client, caplog):
    with caplog.at_level("INFO", logger="users"):
        api_client.post(LOGIN, {"username": user.username, "password": "hunter2-wrong"}, format="json")
        user_client.post(LOGOUT, {"refresh": "not-a-token"}, format="json")

    [login] = events(caplog, "login")
    assert (login.levelname, login.outcome, login.username) == ("WARNING", "failure", user.username)
    assert "hunter2" not in caplog.text
    [logout] = events(caplog, "logout")
    assert (logout.outcome, logout.user_id, logout.reason) == ("failure", user.pk, "TokenError")
