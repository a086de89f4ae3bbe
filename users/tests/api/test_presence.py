"""Heartbeats, my presence, my account and my sessions (users.api.presence)."""

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.http import QueryDict
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.exceptions import ValidationError
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from users.models import OnlineStatus, User
from users.services import presence
from users.tests.factories import PASSWORD, UserFactory
from users.tests.helpers import (
    ALL_USERS,
    HEARTBEAT,
    LOGIN,
    LOGOUT,
    ME,
    MY_PRESENCE,
    MY_SESSIONS,
    REFRESH,
    assert_json_error,
    client_for,
    client_with_token,
    log_in,
    session_of,
    stored,
)

pytestmark = pytest.mark.django_db
NOW = timezone.now().replace(microsecond=0)


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

    @pytest.mark.postgres
    @pytest.mark.django_db(transaction=True)
    def test_a_heartbeat_that_changes_no_status_answers_first_and_its_write_lands_at_the_flush(self, deferred_activity):
        user = UserFactory()
        # Past the write granularity, within the feed's margin of the timeout.
        with time_machine.travel(timezone.now() - timedelta(seconds=40)):
            user_client = client_for(user)
        before = stored(user)

        with CaptureQueriesContext(connection) as queries:
            response = user_client.post(HEARTBEAT)

        assert response.status_code == 200
        answer = response.json()
        assert answer["online_status"] == "online"
        assert answer["last_seen"] > before[1].isoformat().replace("+00:00", "Z")  # the answer is the new time
        assert [query["sql"] for query in queries if "UPDATE" in query["sql"]] == []
        assert stored(user) == before  # answered before it was written

        assert presence.write_deferred_activity() == 1
        status, last_seen = stored(user)
        assert (status, last_seen.isoformat().replace("+00:00", "Z")) == ("online", answer["last_seen"])

    @pytest.mark.postgres
    @pytest.mark.django_db(transaction=True)
    def test_a_heartbeat_that_changes_the_status_is_written_before_the_answer(self, deferred_activity):
        user = UserFactory()
        user_client = client_for(user)

        response = user_client.post(HEARTBEAT, {"status": "away"}, format="json")

        assert response.status_code == 200 and response.json()["online_status"] == "away"
        assert stored(user)[0] == OnlineStatus.AWAY
        assert deferred_activity.pending() == 0


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

    def test_needs_authentication_and_refuses_delete(self, api_client, user_client):
        assert_json_error(api_client.get(ME), 401)
        assert_json_error(api_client.patch(ME, {"share_presence": False}, format="json"), 401)
        assert_json_error(api_client.put(ME, {"share_presence": False}, format="json"), 401)
        assert_json_error(user_client.delete(ME), 405)

    def test_put_changes_only_what_it_names_as_patch_does(self, user_client, user):
        # The OffChat frontend's password change is a PUT of two fields: the rest stays.
        assert user_client.put(ME, {"share_presence": False}, format="json").status_code == 200
        stored = User.objects.get(pk=user.pk)
        assert (stored.share_presence, stored.first_name, stored.last_name) == (False, user.first_name, user.last_name)


HEARTBEAT_BODIES = [
    {},
    QueryDict(),  # no body at all
    {"status": "online"},
    {"status": "away"},
    {"logout": True},
    {"logout": False},
    {"logout": False, "status": "away"},
    {"status": "busy"},
    {"status": None},
    {"status": 1},
    {"status": ["away"]},
    {"logout": "true"},
    {"logout": 1},
    {"logout": None},
    {"logout": True, "status": "away"},
    {"logout": True, "status": "online"},
    {"stauts": "away"},
    {"status": "away", "extra": 1},
    [],
    ["status"],
    "away",
    3,
]


@pytest.mark.parametrize("body", HEARTBEAT_BODIES, ids=[repr(body) for body in HEARTBEAT_BODIES])
def test_a_heartbeat_body_reads_exactly_as_its_documented_serializer_says(body):
    from users.api.serializers.presence import HeartbeatSerializer, read_heartbeat

    serializer = HeartbeatSerializer(data=body)
    if serializer.is_valid():
        assert read_heartbeat(body) == serializer.validated_data
    else:
        with pytest.raises(ValidationError) as refused:
            read_heartbeat(body)
        assert refused.value.detail == serializer.errors


@pytest.mark.parametrize("body", [{}, QueryDict(), {"status": "away"}, {"logout": True}])
def test_the_bodies_clients_send_are_read_without_building_the_serializer(body, monkeypatch):
    from users.api.serializers import presence as presence_serializers

    monkeypatch.delattr(presence_serializers, "HeartbeatSerializer")  # a NameError if built
    assert set(presence_serializers.read_heartbeat(body)) == {"status", "logout"}


@pytest.mark.parametrize("state", ["online", "away", "manual_away", "hidden", "never_active"])
def test_the_heartbeat_answer_is_exactly_what_its_documented_serializer_says(state):
    from users.api.serializers.presence import HeartbeatResponseSerializer, heartbeat_answer

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
