from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.throttling import ScopedRateThrottle
from rest_framework_simplejwt.tokens import RefreshToken

from users.models import OnlineStatus, User
from users.services import presence
from users.tests.conftest import client_for, client_with_token
from users.tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.django_db
NOW = timezone.now().replace(microsecond=0)

LOGIN = "/api/users/login/"
REFRESH = "/api/users/token/refresh/"
LOGOUT = "/api/users/logout/"
HEARTBEAT = "/api/users/heartbeat/"
ALL_USERS = "/api/users/all-users/"
ADMIN_USERS = "/api/users/admin/users/"
ADMIN_ONLINE = "/api/users/admin/users/online/"


def status_url(user_id):
    return f"/api/users/admin/users/{user_id}/online-status/"


def set_status_url(user_id):
    return f"/api/users/admin/users/{user_id}/set-online-status/"


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
