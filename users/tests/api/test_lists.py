"""The user lists (users.api.lists): the directory, the admin lists and actions, the change
feed, ETags, the summary and keyset paging."""

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIRequestFactory

from users.api.pagination import CappedCountPagination
from users.api.serializers import lists as serializers
from users.models import OnlineStatus, User
from users.presence_rules import away_after, inactivity_timeout
from users.selectors import accounts
from users.services import presence
from users.tests.factories import StaffFactory, UserFactory
from users.tests.helpers import (
    ADMIN_ONLINE,
    ADMIN_USERS,
    ALL_USERS,
    HEARTBEAT,
    LOGOUT,
    ME,
    SUMMARY,
    admin_sessions_url,
    assert_json_error,
    client_for,
    client_with_token,
    log_in,
    set_status_url,
    status_url,
    stored,
    users_in_every_state,
)

pytestmark = pytest.mark.django_db
NOW = timezone.now().replace(microsecond=0)


class TestAllUsers:
    def test_lists_active_users_with_fresh_presence_and_no_private_fields(self, user_client, user):
        other = UserFactory(username="zz-other")
        UserFactory(username="zz-gone", is_active=False)
        client_for(other).post(HEARTBEAT)

        response = user_client.get(ALL_USERS)

        assert response.status_code == 200
        body = response.json()
        # `users` repeats the rows for the OffChat frontend (test_offchat_contract.py).
        assert set(body) == {"count", "next", "previous", "results", "cursor", "users"}
        assert body["users"] == body["results"]
        rows = {row["username"]: row for row in body["results"]}
        assert set(rows) == {user.username, other.username}
        assert rows[other.username]["online_status"] == "online"
        assert set(rows[other.username]) == {
            "id",
            "username",
            "first_name",
            "last_name",
            "online_status",
            "last_seen",
            "last_active",  # for users shown away (test_history.py); null for this online one
        }
        assert rows[other.username]["last_active"] is None

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

    def test_orders_by_presence_online_away_offline_not_by_the_status_strings(self, staff_client, staff):
        # Alphabetically "online" > "offline" > "away": a string sort would put offline second.
        offline = UserFactory()
        away = UserFactory(online_status=OnlineStatus.AWAY, last_seen=NOW)
        online = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=NOW, last_active=NOW)
        ids = [row["id"] for row in staff_client.get(ADMIN_USERS, {"ordering": "-online_status"}).json()["results"]]
        assert ids == [staff.pk, online.pk, away.pk, offline.pk]  # ties (staff is online too) by id
        ids = [row["id"] for row in staff_client.get(ADMIN_USERS, {"ordering": "online_status"}).json()["results"]]
        assert ids == [offline.pk, away.pk, staff.pk, online.pk]

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

    @pytest.mark.parametrize("new_status", ["online", "away"])
    def test_online_or_away_for_a_user_with_no_live_session_is_a_409_saying_why(self, staff_client, new_status):
        target = UserFactory()  # never logged in: no live session
        before = User.objects.values().get(pk=target.pk)

        response = staff_client.post(set_status_url(target.pk), {"online_status": new_status}, format="json")

        assert assert_json_error(response, 409) == {
            "detail": "This user has no live session: they can be set online or away only while connected.",
            "code": "no_live_session",
        }
        assert User.objects.values().get(pk=target.pk) == before  # nothing written, not even a feed id

    def test_offline_for_a_user_with_no_live_session_is_fine(self, staff_client, user):
        response = staff_client.post(set_status_url(user.pk), {"online_status": "offline"}, format="json")
        assert response.status_code == 200
        assert response.json()["online_status"] == "offline"

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
        assert [row["id"] for row in rows] == [stale.pk, away.pk, staff.pk]  # offline < away < online


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


# --- Dashboard summary ----------------------------------------------------------------
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


# --- Counting up to a limit -------------------------------------------------------------
@pytest.fixture
def count_limit(monkeypatch):
    """The admin lists count 1,000 rows at most; 3 here, to see the limit with a few users."""
    monkeypatch.setattr(CappedCountPagination, "count_limit", 3)
    return 3


def test_below_the_limit_the_admin_count_is_exact(staff_client, staff):
    UserFactory()
    body = staff_client.get(ADMIN_USERS).json()
    assert list(body)[:2] == ["count", "count_capped"]
    assert (body["count"], body["count_capped"], body["next"]) == (2, False, None)


def test_past_the_limit_the_count_stops_and_next_still_walks_every_user(staff, staff_client, count_limit):
    UserFactory.create_batch(6)  # 7 with the staff member
    expected = list(User.objects.order_by("username").values_list("pk", flat=True))
    seen, counts, url, params = [], [], ADMIN_USERS, {"page_size": 2}
    while url:
        body = staff_client.get(url, params).json()
        counts.append((body["count"], body["count_capped"]))
        seen += [row["id"] for row in body["results"]]
        url, params = body["next"], None
    assert seen == expected
    # Counted to the limit, or to the end of the page asked for; exact once the rest fits.
    assert counts == [(3, True), (4, True), (6, True), (7, False)]


def test_a_deep_page_counts_to_its_own_end_and_page_last_counts_everything(staff, staff_client, count_limit):
    UserFactory.create_batch(6)
    deep = staff_client.get(ADMIN_USERS, {"page_size": 2, "page": 3}).json()
    assert (deep["count"], deep["count_capped"], len(deep["results"])) == (6, True, 2) and deep["next"]
    last = staff_client.get(ADMIN_USERS, {"page_size": 2, "page": "last"}).json()
    assert (last["count"], last["count_capped"], len(last["results"]), last["next"]) == (7, False, 1, None)
    assert staff_client.get(ADMIN_USERS, {"page_size": 2, "page": 5}).status_code == 404


def test_the_capped_count_reads_only_limit_plus_one_rows(staff, staff_client, count_limit):
    UserFactory.create_batch(6)
    with CaptureQueriesContext(connection) as queries:
        staff_client.get(ADMIN_USERS, {"page_size": 2})
    count = next(query["sql"] for query in queries if "COUNT(" in query["sql"])
    assert "LIMIT 4" in count, count


def test_an_online_page_runs_as_many_queries_for_10_rows_as_for_200(staff_client):
    for user in UserFactory.create_batch(12):
        presence.start_session(user=user)
    with CaptureQueriesContext(connection) as ten:
        assert len(staff_client.get(ADMIN_USERS, {"online_status": "online", "page_size": 10}).json()["results"]) == 10
    with CaptureQueriesContext(connection) as all_of_them:
        body = staff_client.get(ADMIN_USERS, {"online_status": "online", "page_size": 200}).json()
    assert len(body["results"]) == 13  # and the staff member signed in to ask
    assert len(ten) == len(all_of_them)


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


@pytest.mark.parametrize("time_zone", ["UTC", "America/Sao_Paulo"])
@pytest.mark.parametrize(
    ("serializer_name", "row_fields"),
    [("AdminUserSerializer", accounts.ADMIN_FIELDS), ("DirectoryUserSerializer", accounts.DIRECTORY_FIELDS)],
)
def test_list_rows_built_by_hand_are_exactly_the_declared_fields_for_every_state_and_viewer(
    serializer_name, row_fields, time_zone
):
    """By hand (FastRowsMixin, timestamps written with the time zone read once) and from named
    rows (accounts.as_rows, as the lists read them), a row is what DRF's fields write from a
    model instance, in the time zone active."""
    second = timedelta(seconds=1)
    ages = [None, 5 * second, inactivity_timeout() + second, away_after() + second]
    users = users_in_every_state(now=NOW, ages=ages, manual_statuses=[None, "online", "away"])
    User.objects.filter(pk__in=[u.pk for u in users[::2]]).update(share_presence=False, is_staff=True)
    users = list(User.objects.filter(pk__in=[u.pk for u in users]).order_by("pk"))
    named_rows = list(
        accounts.as_rows(User.objects.filter(pk__in=[u.pk for u in users]).order_by("pk"), fields=row_fields)
    )
    viewers = [StaffFactory(), UserFactory(), users[0], users[1]]
    serializer_class = getattr(serializers, serializer_name)
    compared, stamps = 0, []
    with timezone.override(time_zone):
        for viewer in viewers:
            request = APIRequestFactory().get("/")
            request.user = viewer
            serializer = serializer_class(context={"request": request, "presence_now": NOW})
            for user, named_row in zip(users, named_rows, strict=True):
                by_hand = serializer.to_representation(user)
                assert by_hand == serializer.to_representation_field_by_field(user), (viewer.pk, user.pk)
                assert serializer.to_representation(named_row) == by_hand, (viewer.pk, user.pk)
                assert list(by_hand) == list(serializer.fields)  # same keys, same order
                stamps.extend(by_hand[key] for key in ("last_seen", "last_active", "date_joined") if by_hand.get(key))
                compared += 1
    assert compared == len(viewers) * len(users)
    assert stamps and all(stamp.endswith("Z" if time_zone == "UTC" else "-03:00") for stamp in stamps)
    rows = serializer_class(users, many=True, context={"request": request, "presence_now": NOW}).data
    assert {row["online_status"] for row in rows} == {"online", "away", "offline"}  # the grid covers them all
