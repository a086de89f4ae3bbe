from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.throttling import AnonRateThrottle, ScopedRateThrottle
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from users.models import OnlineStatus, PresenceSession, User
from users.services import presence
from users.tests.conftest import client_for, client_with_token
from users.tests.factories import PASSWORD, StaffFactory, UserFactory

pytestmark = pytest.mark.django_db
NOW = timezone.now().replace(microsecond=0)

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


def status_url(user_id):
    return f"/api/users/admin/users/{user_id}/online-status/"


def set_status_url(user_id):
    return f"/api/users/admin/users/{user_id}/set-online-status/"


def admin_sessions_url(user_id):
    return f"/api/users/admin/users/{user_id}/sessions/"


def assert_json_error(response, status_code):
    assert response.status_code == status_code, response.content
    assert response["Content-Type"] == "application/json"
    return response.json()


def stored(user):
    user = User.objects.get(pk=user.pk)
    return user.online_status, user.last_seen


def log_in(api_client, user):
    return api_client.post(LOGIN, {"username": user.username, "password": PASSWORD}, format="json")


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

    def test_brute_force_is_throttled_with_retry_after(self, api_client, user, monkeypatch):
        monkeypatch.setitem(ScopedRateThrottle.THROTTLE_RATES, "login", "3/min")
        for _ in range(3):
            api_client.post(LOGIN, {"username": user.username, "password": "wrong"}, format="json")
        response = log_in(api_client, user)
        assert_json_error(response, 429)
        assert int(response["Retry-After"]) > 0
        assert stored(user)[0] == OnlineStatus.OFFLINE

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

    def test_missing_and_garbage_refresh(self, user_client):
        assert "refresh" in assert_json_error(user_client.post(LOGOUT, {}, format="json"), 400)
        assert_json_error(user_client.post(LOGOUT, {"refresh": "garbage"}, format="json"), 401)

    def test_cannot_log_out_somebody_else(self, api_client, user):
        victim = UserFactory()
        victim_tokens = log_in(api_client, victim).json()

        response = client_for(user).post(LOGOUT, {"refresh": victim_tokens["refresh"]}, format="json")

        assert_json_error(response, 403)
        assert stored(victim)[0] == OnlineStatus.ONLINE
        assert api_client.post(REFRESH, {"refresh": victim_tokens["refresh"]}, format="json").status_code == 200


class TestHeartbeat:
    @time_machine.travel(NOW, tick=False)
    def test_marks_online_updates_last_seen_and_returns_presence(self, user):
        response = client_for(user).post(HEARTBEAT)

        assert response.status_code == 200
        assert response.json() == {
            "id": user.pk,
            "username": user.username,
            "online_status": "online",
            "last_seen": NOW.isoformat().replace("+00:00", "Z"),
            "last_active": NOW.isoformat().replace("+00:00", "Z"),
            "manual_status": None,
            "share_presence": True,
            "is_online": True,
            "heartbeat_interval": settings.PRESENCE_HEARTBEAT_INTERVAL,
        }
        assert stored(user) == (OnlineStatus.ONLINE, NOW)

    def test_each_heartbeat_moves_last_seen(self, user):
        with time_machine.travel(NOW, tick=False):
            user_client = client_for(user)
            user_client.post(HEARTBEAT)
        later = NOW + timedelta(seconds=settings.PRESENCE_HEARTBEAT_INTERVAL)
        with time_machine.travel(later, tick=False):
            assert user_client.post(HEARTBEAT).json()["last_seen"].startswith(later.strftime("%Y-%m-%dT%H:%M:%S"))
        assert stored(user) == (OnlineStatus.ONLINE, later)

    def test_without_or_with_a_bad_token_is_401(self, api_client, user):
        assert_json_error(api_client.post(HEARTBEAT), 401)
        api_client.credentials(HTTP_AUTHORIZATION="Bearer not.a.token")
        assert_json_error(api_client.post(HEARTBEAT), 401)
        assert stored(user)[0] == OnlineStatus.OFFLINE

    def test_refresh_token_is_not_an_access_token(self, api_client, user):
        api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user)}")
        assert_json_error(api_client.post(HEARTBEAT), 401)

    def test_token_of_a_deactivated_user_is_401(self, user_client, user):
        user.is_active = False
        user.save()
        before = stored(user)
        with time_machine.travel(timezone.now() + timedelta(minutes=1)):
            assert_json_error(user_client.post(HEARTBEAT), 401)
        assert stored(user) == before

    def test_get_is_405(self, user_client):
        assert_json_error(user_client.get(HEARTBEAT), 405)


class TestAllUsers:
    def test_lists_active_users_with_fresh_presence_and_no_private_fields(self, user_client, user):
        other = UserFactory(username="zz-other")
        UserFactory(username="zz-gone", is_active=False)
        client_for(other).post(HEARTBEAT)

        response = user_client.get(ALL_USERS)

        assert response.status_code == 200
        body = response.json()
        assert set(body) == {"count", "next", "previous", "results", "cursor"}
        rows = {row["username"]: row for row in body["results"]}
        assert set(rows) == {user.username, other.username}
        assert rows[other.username]["online_status"] == "online"
        assert set(rows[other.username]) == {"id", "username", "first_name", "last_name", "online_status", "last_seen"}

    def test_staff_also_see_emails_and_flags(self, staff_client, user):
        rows = staff_client.get(ALL_USERS).json()["results"]
        assert {"email", "is_staff"} <= set(rows[0])

    def test_is_paginated(self, user_client):
        UserFactory.create_batch(4)
        first = user_client.get(ALL_USERS, {"page_size": 2}).json()
        assert first["count"] == 5
        assert len(first["results"]) == 2
        assert first["next"] is not None
        second = user_client.get(first["next"]).json()
        assert {r["id"] for r in first["results"]}.isdisjoint({r["id"] for r in second["results"]})

    def test_query_count_does_not_grow_with_the_page(self, user_client, django_assert_num_queries):
        UserFactory.create_batch(3)
        with CaptureQueriesContext(connection) as small_page:
            user_client.get(ALL_USERS, {"page_size": 2})
        UserFactory.create_batch(30)
        with django_assert_num_queries(len(small_page)):
            assert len(user_client.get(ALL_USERS, {"page_size": 30}).json()["results"]) == 30

    def test_page_past_the_end_is_a_json_404(self, user_client):
        assert_json_error(user_client.get(ALL_USERS, {"page": 99}), 404)
        assert_json_error(user_client.get(ALL_USERS, {"page": "abc"}), 404)

    def test_needs_authentication(self, api_client):
        assert_json_error(api_client.get(ALL_USERS), 401)


class TestAdminUsers:
    def test_lists_every_account_with_presence(self, staff_client, staff):
        UserFactory(is_active=False)
        body = staff_client.get(ADMIN_USERS).json()
        assert body["count"] == 2
        assert {"online_status", "last_seen", "is_online", "email", "is_active"} <= set(body["results"][0])

    def test_filters_by_status(self, staff_client, staff):
        online = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=NOW, last_active=NOW)
        away = UserFactory(online_status=OnlineStatus.AWAY, last_seen=NOW)
        offline = UserFactory()
        for status, expected in (("online", {online.pk, staff.pk}), ("away", {away.pk}), ("offline", {offline.pk})):
            rows = staff_client.get(ADMIN_USERS, {"online_status": status}).json()["results"]
            assert {row["id"] for row in rows} == expected, status

    def test_filters_by_account_flags(self, staff_client, staff):
        gone = UserFactory(is_active=False)
        UserFactory()
        assert [row["id"] for row in staff_client.get(ADMIN_USERS, {"is_active": "false"}).json()["results"]] == [
            gone.pk
        ]
        assert [row["id"] for row in staff_client.get(ADMIN_USERS, {"is_staff": "true"}).json()["results"]] == [
            staff.pk
        ]

    def test_an_unknown_status_filter_is_a_400_naming_the_field(self, staff_client):
        body = assert_json_error(staff_client.get(ADMIN_USERS, {"online_status": "busy"}), 400)
        assert "online_status" in body

    def test_searches_username_email_and_names(self, staff_client):
        target = UserFactory(username="grace", email="hopper@navy.example", first_name="Grace", last_name="Hopper")
        UserFactory(username="alan", email="turing@example.com", first_name="Alan", last_name="Turing")
        for term in ("grac", "navy.example", "Hopper"):
            rows = staff_client.get(ADMIN_USERS, {"search": term}).json()["results"]
            assert [row["id"] for row in rows] == [target.pk], term

    def test_orders_by_last_seen_with_never_seen_users_last(self, staff_client, staff):
        early = UserFactory(last_seen=NOW - timedelta(hours=2))
        late = UserFactory(last_seen=NOW - timedelta(hours=1))
        never_seen = UserFactory()
        ids = [row["id"] for row in staff_client.get(ADMIN_USERS, {"ordering": "-last_seen"}).json()["results"]]
        assert ids == [staff.pk, late.pk, early.pk, never_seen.pk]
        ids = [row["id"] for row in staff_client.get(ADMIN_USERS, {"ordering": "last_seen"}).json()["results"]]
        assert ids == [early.pk, late.pk, staff.pk, never_seen.pk]

    @pytest.mark.parametrize("ordering", ["password", "nonexistent", "username; DROP TABLE users", "-"])
    def test_an_unknown_ordering_is_ignored(self, staff_client, ordering):
        UserFactory(username="bbb")
        response = staff_client.get(ADMIN_USERS, {"ordering": ordering})
        assert response.status_code == 200
        usernames = [row["username"] for row in response.json()["results"]]
        assert usernames == sorted(usernames)

    def test_non_staff_get_403_and_anonymous_401(self, user_client, api_client):
        assert_json_error(user_client.get(ADMIN_USERS), 403)
        assert_json_error(api_client.get(ADMIN_USERS), 401)


class TestAdminOnlineUsers:
    def test_lists_only_users_online_now(self, staff_client, staff):
        online = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=NOW, last_active=NOW)
        UserFactory(online_status=OnlineStatus.AWAY, last_seen=NOW)
        UserFactory(online_status=OnlineStatus.ONLINE, last_seen=NOW)  # connected, no input: away
        UserFactory(online_status=OnlineStatus.OFFLINE)
        body = staff_client.get(ADMIN_ONLINE).json()
        assert {row["id"] for row in body["results"]} == {online.pk, staff.pk}
        assert body["count"] == 2

    def test_non_staff_get_403_and_anonymous_401(self, user_client, api_client):
        assert_json_error(user_client.get(ADMIN_ONLINE), 403)
        assert_json_error(api_client.get(ADMIN_ONLINE), 401)


class TestAdminReadStatus:
    def test_returns_the_users_presence(self, staff_client):
        target = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=NOW, last_active=NOW)
        assert staff_client.get(status_url(target.pk)).json() == {
            "id": target.pk,
            "username": target.username,
            "online_status": "online",
            "last_seen": NOW.isoformat().replace("+00:00", "Z"),
            "last_active": NOW.isoformat().replace("+00:00", "Z"),
            "manual_status": None,
            "share_presence": True,
            "is_online": True,
        }

    @pytest.mark.parametrize("bad_id", ["999999", "abc", "-1", "1.5"])
    def test_unknown_or_malformed_id_is_a_json_404(self, staff_client, bad_id):
        assert_json_error(staff_client.get(status_url(bad_id)), 404)

    def test_non_staff_get_403_and_anonymous_401(self, user_client, api_client, user):
        assert_json_error(user_client.get(status_url(user.pk)), 403)
        assert_json_error(api_client.get(status_url(user.pk)), 401)


class TestAdminSetStatus:
    @pytest.mark.parametrize("new_status", ["online", "away", "offline"])
    def test_sets_the_status_and_leaves_last_seen_alone(self, staff_client, new_status):
        seen = NOW - timedelta(seconds=10)
        target = UserFactory()
        session = presence.start_session(user=target, at=seen)
        if new_status != "away":
            presence.record_activity(user=target, session=session, active=False, reported_status="away", at=seen)

        response = staff_client.post(set_status_url(target.pk), {"online_status": new_status}, format="json")

        assert response.status_code == 200
        assert response.json()["online_status"] == new_status
        assert stored(target) == (new_status, seen)

    def test_an_admin_setting_their_own_status_keeps_it(self, staff_client, staff):
        response = staff_client.post(set_status_url(staff.pk), {"online_status": "away"}, format="json")
        assert response.status_code == 200
        assert stored(staff)[0] == OnlineStatus.AWAY

    def test_an_invalid_value_is_a_400_naming_the_field_and_allowed_values(self, staff_client, user):
        body = assert_json_error(
            staff_client.post(set_status_url(user.pk), {"online_status": "busy"}, format="json"), 400
        )
        message = body["online_status"][0]
        assert all(value in message for value in ("online", "away", "offline"))
        assert stored(user)[0] == OnlineStatus.OFFLINE

    @pytest.mark.parametrize(
        "payload", [{}, {"online_status": None}, {"online_status": ["online"]}, {"online_status": 1}]
    )
    def test_missing_or_mistyped_values_are_400(self, staff_client, user, payload):
        body = assert_json_error(staff_client.post(set_status_url(user.pk), payload, format="json"), 400)
        assert "online_status" in body

    def test_unknown_id_is_404(self, staff_client):
        assert_json_error(staff_client.post(set_status_url(999999), {"online_status": "online"}, format="json"), 404)

    def test_non_staff_cannot_change_anyone(self, user_client, api_client, user):
        target = UserFactory()
        assert_json_error(user_client.post(set_status_url(target.pk), {"online_status": "online"}, format="json"), 403)
        assert_json_error(api_client.post(set_status_url(target.pk), {"online_status": "online"}, format="json"), 401)
        assert stored(target)[0] == OnlineStatus.OFFLINE

    def test_get_is_405(self, staff_client, user):
        assert_json_error(staff_client.get(set_status_url(user.pk)), 405)


def test_unknown_api_url_is_a_json_404(user_client):
    assert_json_error(user_client.get("/api/users/no-such-endpoint/"), 404)


def session_of(access):
    return PresenceSession.objects.get(pk=AccessToken(access)["sid"])


class TestSessionsThroughTheApi:
    def test_logging_out_on_one_device_leaves_the_user_online_on_the_other(self, api_client, user):
        phone, laptop = log_in(api_client, user).json(), log_in(api_client, user).json()

        response = client_with_token(phone["access"]).post(LOGOUT, {"refresh": phone["refresh"]}, format="json")

        assert response.status_code == 200
        assert client_with_token(laptop["access"]).get(MY_PRESENCE).json()["online_status"] == "online"
        assert stored(user)[0] == OnlineStatus.ONLINE

    def test_an_access_token_of_a_logged_out_session_is_401_at_once(self, api_client, user):
        phone, laptop = log_in(api_client, user).json(), log_in(api_client, user).json()
        phone_client = client_with_token(phone["access"])
        phone_client.post(LOGOUT, {"refresh": phone["refresh"]}, format="json")

        for method, url in (("post", HEARTBEAT), ("get", ALL_USERS), ("get", MY_PRESENCE)):
            body = assert_json_error(getattr(phone_client, method)(url), 401)
            assert "logged out" in body["detail"]
        assert client_with_token(laptop["access"]).post(HEARTBEAT).status_code == 200

    def test_refreshed_tokens_keep_the_session(self, api_client, user):
        tokens = log_in(api_client, user).json()
        refreshed = api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json").json()
        assert AccessToken(refreshed["access"])["sid"] == str(tokens["session_id"])
        assert RefreshToken(refreshed["refresh"])["sid"] == str(tokens["session_id"])
        later = timezone.now() + timedelta(minutes=1)
        with time_machine.travel(later, tick=False):
            assert client_with_token(refreshed["access"]).post(HEARTBEAT).status_code == 200
        assert session_of(refreshed["access"]).last_seen == later

    def test_a_refresh_token_of_an_ended_session_is_refused(self, api_client, user):
        tokens = log_in(api_client, user).json()
        other = client_for(user)
        assert other.delete(f"{MY_SESSIONS}{tokens['session_id']}/").status_code == 204
        assert_json_error(api_client.post(REFRESH, {"refresh": tokens["refresh"]}, format="json"), 401)
        assert_json_error(client_with_token(tokens["access"]).get(ALL_USERS), 401)

    def test_an_idle_ended_session_keeps_its_tokens_and_comes_back_online(self, api_client, user):
        tokens = log_in(api_client, user).json()
        later = timezone.now() + timedelta(minutes=10)
        presence.mark_inactive_users_offline(now=later)
        assert stored(user)[0] == OnlineStatus.OFFLINE

        with time_machine.travel(later, tick=False):
            response = client_with_token(tokens["access"]).post(HEARTBEAT)

        assert response.status_code == 200
        assert response.json()["online_status"] == "online"
        assert session_of(tokens["access"]).is_live

    def test_login_records_the_device(self, api_client, user):
        tokens = api_client.post(
            LOGIN,
            {"username": user.username, "password": PASSWORD},
            format="json",
            HTTP_USER_AGENT="Phone/1.0 " + "x" * 400,
        ).json()
        session = session_of(tokens["access"])
        assert session.user_agent.startswith("Phone/1.0") and len(session.user_agent) == 256
        assert session.ip_address == "127.0.0.1"


class TestMySessions:
    def test_lists_only_my_sessions_and_marks_the_current_one(self, api_client, user):
        mine = [log_in(api_client, user).json() for _ in range(2)]
        log_in(api_client, UserFactory())
        rows = client_with_token(mine[1]["access"]).get(MY_SESSIONS).json()["results"]
        assert {row["id"] for row in rows} == {str(tokens["session_id"]) for tokens in mine}
        assert [row["is_current"] for row in rows if row["id"] == str(mine[1]["session_id"])] == [True]
        assert {"user_agent", "ip_address", "created_at", "last_seen", "is_live", "revoked_at"} <= set(rows[0])

    def test_ending_one_of_my_sessions_revokes_it_and_keeps_the_rest(self, api_client, user):
        phone, laptop = log_in(api_client, user).json(), log_in(api_client, user).json()
        laptop_client = client_with_token(laptop["access"])

        assert laptop_client.delete(f"{MY_SESSIONS}{phone['session_id']}/").status_code == 204

        assert_json_error(client_with_token(phone["access"]).post(HEARTBEAT), 401)
        assert laptop_client.post(HEARTBEAT).status_code == 200
        assert session_of(laptop["access"]).revoked_at is None

    def test_ending_my_current_session_logs_me_out(self, api_client, user):
        tokens = log_in(api_client, user).json()
        client = client_with_token(tokens["access"])
        assert client.delete(f"{MY_SESSIONS}{tokens['session_id']}/").status_code == 204
        assert stored(user)[0] == OnlineStatus.OFFLINE
        assert_json_error(client.get(MY_SESSIONS), 401)

    def test_somebody_elses_session_is_404_and_left_alone(self, api_client, user_client):
        victim = log_in(api_client, UserFactory()).json()
        assert_json_error(user_client.delete(f"{MY_SESSIONS}{victim['session_id']}/"), 404)
        assert client_with_token(victim["access"]).post(HEARTBEAT).status_code == 200

    @pytest.mark.parametrize("bad_id", ["abc", "123", "00000000-0000-0000-0000-000000000000"])
    def test_unknown_or_malformed_ids_are_404(self, user_client, bad_id):
        assert_json_error(user_client.delete(f"{MY_SESSIONS}{bad_id}/"), 404)

    def test_needs_authentication_and_refuses_other_methods(self, api_client, user_client):
        assert_json_error(api_client.get(MY_SESSIONS), 401)
        assert_json_error(user_client.post(MY_SESSIONS, {}, format="json"), 405)


class TestAdminSessions:
    def test_lists_a_users_sessions(self, api_client, staff_client, user):
        tokens = log_in(api_client, user).json()
        rows = staff_client.get(admin_sessions_url(user.pk)).json()["results"]
        assert [row["id"] for row in rows] == [str(tokens["session_id"])]

    def test_a_forced_logout_revokes_that_session(self, api_client, staff_client, user):
        tokens = log_in(api_client, user).json()
        response = staff_client.delete(f"{admin_sessions_url(user.pk)}{tokens['session_id']}/")
        assert response.status_code == 204
        assert_json_error(client_with_token(tokens["access"]).post(HEARTBEAT), 401)
        assert stored(user)[0] == OnlineStatus.OFFLINE
        row = staff_client.get(admin_sessions_url(user.pk)).json()["results"][0]
        assert (row["is_live"], row["end_reason"]) == (False, "forced")

    def test_a_session_of_another_user_under_this_user_is_404(self, api_client, staff_client, user):
        other = log_in(api_client, UserFactory()).json()
        assert_json_error(staff_client.delete(f"{admin_sessions_url(user.pk)}{other['session_id']}/"), 404)
        assert client_with_token(other["access"]).post(HEARTBEAT).status_code == 200

    def test_unknown_users_and_malformed_ids_are_404(self, staff_client, user):
        assert_json_error(staff_client.get(admin_sessions_url(999999)), 404)
        assert_json_error(staff_client.delete(f"{admin_sessions_url(user.pk)}nonsense/"), 404)

    def test_non_staff_get_403_and_anonymous_401(self, api_client, user_client, user):
        tokens = log_in(api_client, user).json()
        assert_json_error(user_client.get(admin_sessions_url(user.pk)), 403)
        assert_json_error(user_client.delete(f"{admin_sessions_url(user.pk)}{tokens['session_id']}/"), 403)
        assert_json_error(api_client.get(admin_sessions_url(user.pk)), 401)
        assert client_with_token(tokens["access"]).post(HEARTBEAT).status_code == 200


class TestHeartbeatStatus:
    def test_away_from_the_client_shows_away_and_online_brings_it_back(self, user_client):
        assert user_client.post(HEARTBEAT, {"status": "away"}, format="json").json()["online_status"] == "away"
        assert user_client.get(MY_PRESENCE).json()["online_status"] == "away"  # other requests keep the report
        assert user_client.post(HEARTBEAT, {"status": "online"}, format="json").json()["online_status"] == "online"

    @pytest.mark.parametrize("payload", [{"status": "busy"}, {"status": None}, {"status": ["away"]}, {"status": 1}])
    def test_invalid_statuses_are_400_naming_the_field(self, user_client, user, payload):
        body = assert_json_error(user_client.post(HEARTBEAT, payload, format="json"), 400)
        assert "status" in body
        assert stored(user)[0] == OnlineStatus.ONLINE

    def test_an_away_heartbeat_is_not_input(self, user):
        with time_machine.travel(NOW, tick=False) as clock:
            client = client_for(user)
            clock.shift(60)
            client.post(HEARTBEAT, {"status": "away"}, format="json")
        assert User.objects.get(pk=user.pk).last_active == NOW


class TestMyPresence:
    def test_options_describes_put_instead_of_failing(self, user_client):
        # Found by the schema fuzzer: DRF's metadata asked for an object the view could not give.
        response = user_client.options(MY_PRESENCE)
        assert response.status_code == 200
        assert set(response.json()["actions"]["PUT"]) == {"status"}

    def test_a_manual_away_holds_against_heartbeats_until_cleared(self, user_client):
        response = user_client.put(MY_PRESENCE, {"status": "away"}, format="json")
        assert response.status_code == 200
        assert response.json()["manual_status"] == "away"
        assert user_client.post(HEARTBEAT, {"status": "online"}, format="json").json()["online_status"] == "away"
        cleared = user_client.put(MY_PRESENCE, {"status": None}, format="json").json()
        assert (cleared["online_status"], cleared["manual_status"]) == ("online", None)

    @pytest.mark.parametrize("payload", [{}, {"status": "offline"}, {"status": "busy"}, {"status": 3}])
    def test_invalid_bodies_are_400(self, user_client, user, payload):
        assert "status" in assert_json_error(user_client.put(MY_PRESENCE, payload, format="json"), 400)
        assert User.objects.get(pk=user.pk).manual_status is None

    def test_needs_authentication_and_refuses_other_methods(self, api_client, user_client):
        assert_json_error(api_client.get(MY_PRESENCE), 401)
        assert_json_error(api_client.put(MY_PRESENCE, {"status": "away"}, format="json"), 401)
        assert_json_error(user_client.post(MY_PRESENCE, {"status": "away"}, format="json"), 405)


class TestMe:
    def test_reads_my_account(self, user_client, user):
        body = user_client.get(ME).json()
        assert (body["id"], body["username"], body["share_presence"]) == (user.pk, user.username, True)

    def test_patch_changes_names_and_privacy_only(self, user_client, user):
        response = user_client.patch(ME, {"share_presence": False, "first_name": "Ada"}, format="json")
        assert response.status_code == 200
        stored_user = User.objects.get(pk=user.pk)
        assert (stored_user.share_presence, stored_user.first_name) == (False, "Ada")

    def test_patch_naming_a_read_only_field_is_refused_whole(self, user_client, user):
        response = user_client.patch(
            ME,
            {"share_presence": False, "first_name": "Ada", "is_staff": True, "is_superuser": True, "username": "x"},
            format="json",
        )
        body = assert_json_error(response, 400)
        assert body == {
            "is_staff": ["This field is read-only."],
            "is_superuser": ["Unknown field."],
            "username": ["This field is read-only."],
        }
        stored_user = User.objects.get(pk=user.pk)
        assert (stored_user.share_presence, stored_user.first_name) == (True, user.first_name)
        assert (stored_user.is_staff, stored_user.is_superuser, stored_user.username) == (False, False, user.username)

    @pytest.mark.parametrize(
        "payload", [{"share_presence": "maybe"}, {"share_presence": None}, {"first_name": "x" * 151}]
    )
    def test_invalid_values_are_400(self, user_client, user, payload):
        assert_json_error(user_client.patch(ME, payload, format="json"), 400)
        assert User.objects.get(pk=user.pk).share_presence is True

    def test_needs_authentication_and_refuses_put_and_delete(self, api_client, user_client):
        assert_json_error(api_client.get(ME), 401)
        assert_json_error(api_client.patch(ME, {"share_presence": False}, format="json"), 401)
        assert_json_error(user_client.put(ME, {"share_presence": False}, format="json"), 405)
        assert_json_error(user_client.delete(ME), 405)


class TestPrivacyThroughTheApi:
    def test_others_see_a_hidden_user_offline_while_staff_and_the_user_see_the_truth(self, staff_client):
        hidden = UserFactory(username="hidden")
        hidden_client = client_for(hidden)
        hidden_client.patch(ME, {"share_presence": False}, format="json")
        viewer_client = client_for(UserFactory())

        def row_seen_by(client):
            return next(row for row in client.get(ALL_USERS).json()["results"] if row["username"] == "hidden")

        assert row_seen_by(viewer_client)["online_status"] == "offline"
        assert row_seen_by(viewer_client)["last_seen"] is None
        assert row_seen_by(staff_client)["online_status"] == "online"
        assert row_seen_by(hidden_client)["online_status"] == "online"
        assert staff_client.get(status_url(hidden.pk)).json()["online_status"] == "online"


class TestStatusIsComputedNotTrusted:
    def test_with_no_sweep_a_stale_user_is_offline_on_every_endpoint(self, api_client, user):
        tokens = log_in(api_client, user).json()
        client_with_token(tokens["access"]).post(HEARTBEAT)
        staff = StaffFactory()
        later = timezone.now() + timedelta(seconds=settings.PRESENCE_INACTIVITY_TIMEOUT + 1)
        with time_machine.travel(later, tick=False):
            staff_client = client_for(staff)  # nobody runs the sweep: the column still says online
            directory = {row["id"]: row for row in client_for(UserFactory()).get(ALL_USERS).json()["results"]}
            admin_rows = {row["id"]: row for row in staff_client.get(ADMIN_USERS).json()["results"]}
            online_ids = [row["id"] for row in staff_client.get(ADMIN_ONLINE).json()["results"]]
            filtered = staff_client.get(ADMIN_USERS, {"online_status": "online"}).json()["results"]
            offline = staff_client.get(ADMIN_USERS, {"online_status": "offline"}).json()["results"]
            detail = staff_client.get(status_url(user.pk)).json()

        assert stored(user)[0] == OnlineStatus.ONLINE
        assert directory[user.pk]["online_status"] == admin_rows[user.pk]["online_status"] == "offline"
        assert admin_rows[user.pk]["is_online"] is False
        assert user.pk not in online_ids
        assert user.pk not in [row["id"] for row in filtered]
        assert user.pk in [row["id"] for row in offline]
        assert (detail["online_status"], detail["is_online"]) == ("offline", False)

    def test_ordering_by_status_uses_the_status_shown(self, staff_client, staff):
        stale = UserFactory(username="stale", online_status=OnlineStatus.ONLINE, last_seen=NOW - timedelta(hours=1))
        away = UserFactory(online_status=OnlineStatus.AWAY, last_seen=timezone.now())
        rows = staff_client.get(ADMIN_USERS, {"ordering": "online_status"}).json()["results"]
        assert [row["id"] for row in rows] == [away.pk, stale.pk, staff.pk]  # away < offline < online


class TestChangeFeedThroughTheApi:
    def test_a_full_list_gives_a_cursor_that_then_yields_only_changes(self, staff_client):
        quiet, busy = UserFactory(), UserFactory()
        cursor = staff_client.get(ADMIN_USERS).json()["cursor"]
        client_for(busy)

        feed = staff_client.get(ADMIN_USERS, {"since": cursor}).json()

        assert set(feed) == {"results", "removed", "cursor"}
        assert [row["id"] for row in feed["results"]] == [busy.pk]
        assert feed["results"][0]["online_status"] == "online"
        assert quiet.pk not in [row["id"] for row in feed["results"]]
        assert staff_client.get(ADMIN_USERS, {"since": feed["cursor"]}).json()["results"] == []

    def test_the_directory_feed_removes_deactivated_and_deleted_users(self, user_client):
        leaving, deleted = UserFactory(), UserFactory()
        cursor = user_client.get(ALL_USERS).json()["cursor"]
        leaving.is_active = False
        leaving.save()
        deleted_id = deleted.pk
        deleted.delete()

        feed = user_client.get(ALL_USERS, {"since": cursor}).json()

        assert feed["results"] == []
        assert feed["removed"] == sorted([leaving.pk, deleted_id])

    def test_a_filtered_feed_names_users_who_left_the_filter(self, staff_client, api_client, user):
        tokens = log_in(api_client, user).json()
        cursor = staff_client.get(ADMIN_ONLINE).json()["cursor"]
        client_with_token(tokens["access"]).post(LOGOUT, {"refresh": tokens["refresh"]}, format="json")
        feed = staff_client.get(ADMIN_USERS, {"online_status": "online", "since": cursor}).json()
        assert (feed["results"], feed["removed"]) == ([], [user.pk])

    def test_privacy_changes_reach_the_feed_as_offline(self, user_client):
        other = UserFactory()
        other_client = client_for(other)
        cursor = user_client.get(ALL_USERS).json()["cursor"]
        other_client.patch(ME, {"share_presence": False}, format="json")
        rows = user_client.get(ALL_USERS, {"since": cursor}).json()["results"]
        assert [(row["id"], row["online_status"]) for row in rows] == [(other.pk, "offline")]

    @pytest.mark.parametrize("since", ["", "garbage", "1-", "99999999-1", "1-99999999999999"])
    def test_malformed_or_unknown_cursors_are_400(self, user_client, since):
        body = assert_json_error(user_client.get(ALL_USERS, {"since": since}), 400)
        assert body["code"] == "invalid_cursor"
        assert body["since"]

    def test_a_cursor_too_old_asks_for_a_resync(self, user_client):
        cursor = user_client.get(ALL_USERS).json()["cursor"]
        with time_machine.travel(timezone.now() + timedelta(seconds=settings.PRESENCE_FEED_MAX_AGE + 60)):
            body = assert_json_error(client_for(UserFactory()).get(ALL_USERS, {"since": cursor}), 400)
        assert body["code"] == "resync_required"

    def test_the_admin_feed_is_staff_only(self, user_client, api_client):
        cursor = user_client.get(ALL_USERS).json()["cursor"]
        assert_json_error(user_client.get(ADMIN_USERS, {"since": cursor}), 403)
        assert_json_error(api_client.get(ALL_USERS, {"since": cursor}), 401)


class TestETag:
    def test_an_unchanged_list_is_304_with_no_body(self, staff_client):
        first = staff_client.get(ADMIN_USERS)
        etag = first["ETag"]
        again = staff_client.get(ADMIN_USERS, HTTP_IF_NONE_MATCH=etag)
        assert again.status_code == 304
        assert again.content == b""
        assert again["ETag"] == etag

    def test_heartbeats_alone_do_not_change_the_etag_but_a_transition_does(self, staff, settings):
        settings.PRESENCE_WRITE_GRANULARITY = 0
        user = UserFactory()
        with time_machine.travel(NOW, tick=False) as clock:
            staff_client, user_client = client_for(staff), client_for(user)
            etag = staff_client.get(ADMIN_USERS)["ETag"]
            clock.shift(30)
            user_client.post(HEARTBEAT)
            assert staff_client.get(ADMIN_USERS, HTTP_IF_NONE_MATCH=etag).status_code == 304
            user_client.post(HEARTBEAT, {"status": "away"}, format="json")
            changed = staff_client.get(ADMIN_USERS, HTTP_IF_NONE_MATCH=etag)
        assert changed.status_code == 200
        assert changed["ETag"] != etag

    def test_a_different_page_or_filter_has_another_etag(self, staff_client):
        UserFactory.create_batch(3)
        etag = staff_client.get(ADMIN_USERS)["ETag"]
        assert staff_client.get(ADMIN_USERS, {"page_size": 2}, HTTP_IF_NONE_MATCH=etag).status_code == 200
        assert staff_client.get(ADMIN_USERS, {"search": "user"}, HTTP_IF_NONE_MATCH=etag).status_code == 200

    def test_the_directory_has_one_too_and_any_of_several_tags_matches(self, user_client):
        etag = user_client.get(ALL_USERS)["ETag"]
        assert user_client.get(ALL_USERS, HTTP_IF_NONE_MATCH=f'"stale", W/{etag}').status_code == 304


# --- Health ---------------------------------------------------------------------------
HEALTH = "/api/health/"


def test_health_answers_200_without_authentication_when_all_is_well(api_client):
    presence.mark_inactive_users_offline()
    response = api_client.get(HEALTH, HTTP_AUTHORIZATION="Bearer not-a-token")  # a bad token changes nothing
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "cache", "broker", "sweeper"}
    assert body["checks"]["sweeper"]["users_marked_offline"] == 0
    assert response["Cache-Control"] == "no-store"


def test_health_answers_503_with_the_reason_when_the_sweeper_stalled(api_client):
    presence.mark_inactive_users_offline()
    with time_machine.travel(timezone.now() + timedelta(seconds=3 * settings.PRESENCE_SWEEP_INTERVAL + 1)):
        response = api_client.get(HEALTH)
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["reasons"][0].startswith("sweeper: the last sweep completed")


def test_health_stays_200_but_degraded_when_the_cache_is_down(api_client, settings):
    presence.mark_inactive_users_offline()
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
    }
    response = api_client.get(HEALTH)
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["reasons"] == ["cache: unreachable (ConnectionError)"]


def test_health_reveals_no_configuration(api_client, settings):
    presence.mark_inactive_users_offline()
    body = api_client.get(HEALTH).content.decode()
    for secret in (settings.SECRET_KEY, settings.REDIS_URL or "redis://", str(settings.DATABASES["default"]["NAME"])):
        assert secret not in body


def test_health_is_not_throttled(api_client, monkeypatch):
    monkeypatch.setattr(AnonRateThrottle, "THROTTLE_RATES", {"anon": "2/min"})
    wrong = {"username": "nobody", "password": "wrong"}
    assert [api_client.post(LOGIN, wrong, format="json").status_code for _ in range(3)] == [
        401,
        401,
        429,
    ]  # the anon limit...
    assert {api_client.get(HEALTH).status_code for _ in range(5)} == {503}  # ...but not here (never swept)


# --- Dashboard summary ----------------------------------------------------------------
SUMMARY = "/api/users/admin/users/summary/"


def test_summary_counts_active_users_per_computed_status(staff, staff_client):
    away = UserFactory()
    presence.start_session(user=away)
    presence.set_manual_status(user=away, status="away")
    presence.start_session(user=UserFactory(), at=timezone.now() - timedelta(hours=1))  # stale: offline
    UserFactory(is_active=False)  # not counted

    assert staff_client.get(SUMMARY).json() == {"online": 1, "away": 1, "offline": 1, "total": 3}


def test_summary_is_for_staff_only(user_client, api_client):
    assert user_client.get(SUMMARY).status_code == 403
    assert api_client.get(SUMMARY).status_code == 401


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


@pytest.mark.parametrize("state", ["online", "away", "manual_away", "hidden", "never_active"])
def test_the_heartbeat_answer_is_exactly_what_its_documented_serializer_says(state):
    from users.serializers import HeartbeatResponseSerializer, heartbeat_answer

    user = UserFactory(share_presence=state != "hidden")
    session = presence.start_session(user=user, at=NOW)
    if state == "away":
        presence.record_activity(user=user, session=session, active=False, reported_status="away", at=NOW)
    if state == "manual_away":
        presence.set_manual_status(user=user, status="away")
    if state == "never_active":
        User.objects.filter(pk=user.pk).update(last_active=None)
    user = User.objects.get(pk=user.pk)
    now = NOW + timedelta(seconds=5)
    documented = HeartbeatResponseSerializer(user, context={"presence_now": now}).data
    assert heartbeat_answer(user, now=now) == documented


# --- Keyset paging ---------------------------------------------------------------------
def test_keyset_pages_walk_every_user_once_in_order_without_counting(staff, staff_client):
    UserFactory.create_batch(7)
    expected = list(User.objects.order_by("username").values_list("username", flat=True))
    seen, url, params = [], ADMIN_USERS, {"paging": "keyset", "page_size": 3}
    with CaptureQueriesContext(connection) as queries:
        while url:
            body = staff_client.get(url, params).json()
            assert "count" not in body and body["cursor"]  # no COUNT; the feed's cursor as usual
            seen += [row["username"] for row in body["results"]]
            url, params = body["next"], None
    assert seen == expected
    assert not any("COUNT(" in query["sql"] or "OFFSET" in query["sql"] for query in queries)


def test_keyset_paging_works_with_filters_and_descending_ids(staff_client):
    present = [UserFactory() for _ in range(3)]
    for user in present:
        presence.start_session(user=user)
    UserFactory.create_batch(2)
    online = sorted(User.objects.filter(online_status="online").values_list("pk", flat=True), reverse=True)
    assert len(online) == 4  # the three, and the staff member signed in to ask
    body = staff_client.get(ADMIN_ONLINE, {"paging": "keyset", "ordering": "-id", "page_size": 3}).json()
    assert [row["id"] for row in body["results"]] == online[:3]
    rest = staff_client.get(body["next"]).json()
    assert [row["id"] for row in rest["results"]] == online[3:] and rest["next"] is None


def test_keyset_paging_refuses_an_order_without_a_unique_key(staff_client):
    response = staff_client.get(ADMIN_USERS, {"paging": "keyset", "ordering": "last_seen"})
    assert response.status_code == 400
    assert "order by one of" in response.json()["ordering"][0]


def test_a_forged_keyset_position_is_a_json_404(staff_client):
    response = staff_client.get(ADMIN_USERS, {"paging": "keyset", "after": "not-a-cursor"})
    assert response.status_code == 404
    assert response.json() == {"detail": "Invalid cursor"}


def test_keyset_paging_is_for_staff_lists_and_the_directory_alike(user_client, api_client):
    UserFactory.create_batch(3)
    body = user_client.get(ALL_USERS, {"paging": "keyset", "page_size": 2}).json()
    assert len(body["results"]) == 2 and body["next"]
    assert api_client.get(ADMIN_USERS, {"paging": "keyset"}).status_code == 401
    assert user_client.get(ADMIN_USERS, {"paging": "keyset"}).status_code == 403
