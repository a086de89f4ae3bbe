from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken

from users.models import OnlineStatus, PresenceSession, User
from users.services import auth, presence
from users.tests.factories import UserFactory
from users.tests.helpers import client_with_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


CHANGELIST = "/admin/users/user/"


def test_changelist_filters_by_the_status_shown_now_not_the_stored_column(admin_client):
    presence.start_session(user=UserFactory(username="present-person"))
    # Stored online, but silent past the timeout: the API shows offline, so does the admin.
    presence.start_session(user=UserFactory(username="stale-person"), at=timezone.now() - timedelta(hours=1))
    UserFactory(username="absent-person")

    online_page = admin_client.get(CHANGELIST, {"status": "online"}).content.decode()
    assert "present-person" in online_page
    assert "stale-person" not in online_page and "absent-person" not in online_page
    offline_page = admin_client.get(CHANGELIST, {"status": "offline"}).content.decode()
    assert "stale-person" in offline_page and "absent-person" in offline_page
    assert "present-person" not in offline_page


def test_changelist_shows_status_last_seen_and_live_sessions(admin_client):
    user = UserFactory(username="two-devices")
    presence.start_session(user=user)
    presence.start_session(user=user)
    response = admin_client.get(CHANGELIST, {"q": "two-devices", "o": "3"})  # search, order by status
    assert response.status_code == 200
    [row] = response.context["cl"].result_list
    assert (row.shown_status, row.live_session_count) == ("online", 2)
    assert "&#9679;</span> online" in response.content.decode()


def test_changelist_orders_by_status_as_the_api_does_online_away_offline(admin_client):
    offline = UserFactory(username="rank-offline")
    away = UserFactory(username="rank-away")
    online = UserFactory(username="rank-online")
    session = presence.start_session(user=away)
    presence.record_activity(user=away, session=session, active=False, reported_status="away")
    presence.start_session(user=online)
    for order, expected in (("-3", [online, away, offline]), ("3", [offline, away, online])):  # 3: status
        response = admin_client.get(CHANGELIST, {"q": "rank-", "o": order})
        assert list(response.context["cl"].result_list) == expected, order


def test_action_marks_selected_users_offline(admin_client):
    user = UserFactory()
    presence.start_session(user=user)
    response = admin_client.post(CHANGELIST, {"action": "mark_offline", "_selected_action": [user.pk]}, follow=True)
    assert "Marked 1 user(s) offline." in response.content.decode()
    user.refresh_from_db()
    assert user.online_status == OnlineStatus.OFFLINE
    assert not PresenceSession.objects.filter(user=user, ended_at__isnull=True).exists()


def test_action_signs_selected_users_out_of_every_device(admin_client):
    user, bystander = UserFactory(), UserFactory()
    tokens = [auth.log_in(user=user), auth.log_in(user=user), auth.log_in(user=bystander)]
    response = admin_client.post(
        CHANGELIST, {"action": "sign_out_everywhere", "_selected_action": [user.pk]}, follow=True
    )
    assert "Ended 2 session(s)." in response.content.decode()
    for issued in tokens[:2]:
        assert client_with_token(issued.access).get("/api/users/me/").status_code == 401
    assert client_with_token(tokens[2].access).get("/api/users/me/").status_code == 200
    # Their refresh tokens are blacklisted too, the bystander's not.
    blacklisted = set(BlacklistedToken.objects.values_list("token__user_id", flat=True))
    assert blacklisted == {user.pk}


def test_the_change_page_lists_sessions_read_only(admin_client):
    user = UserFactory()
    presence.start_session(user=user, user_agent="Firefox on a laptop")
    page = admin_client.get(f"/admin/users/user/{user.pk}/change/").content.decode()
    assert "Firefox on a laptop" in page
    assert 'name="presence_sessions-0-user_agent"' not in page  # shown, not editable


def test_non_staff_cannot_reach_the_admin(client):
    client.force_login(UserFactory())
    assert client.get(CHANGELIST).status_code == 302  # to the admin login page


def test_presence_is_read_only_in_the_admin_form(admin_client):
    user = UserFactory(first_name="Old")
    presence.start_session(user=user)
    user.refresh_from_db()
    assert admin_client.get(f"/admin/users/user/{user.pk}/change/").status_code == 200

    response = admin_client.post(
        f"/admin/users/user/{user.pk}/change/",
        {
            "username": user.username,
            "first_name": "New",
            "last_name": user.last_name,
            "email": user.email,
            "is_active": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "online_status": "offline",  # not a form field: ignored
            # The read-only sessions inline's management form: no session is edited.
            "presence_sessions-TOTAL_FORMS": "0",
            "presence_sessions-INITIAL_FORMS": "0",
            "last_seen_0": "2020-01-01",
            "last_seen_1": "00:00:00",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    stored = User.objects.get(pk=user.pk)
    assert stored.first_name == "New"
    assert (stored.online_status, stored.last_seen) == (OnlineStatus.ONLINE, user.last_seen)


def _add_user_form(username):
    return {
        "username": username,
        "usable_password": "true",
        "password1": "a-long-passphrase",
        "password2": "a-long-passphrase",
        # The sessions inline's management form, which the add page carries too.
        "presence_sessions-TOTAL_FORMS": "0",
        "presence_sessions-INITIAL_FORMS": "0",
    }


@pytest.mark.parametrize("spelling", ["Carol", "cAROL"])
def test_adding_a_user_whose_name_differs_only_in_case_is_refused_through_the_index(admin_client, spelling):
    UserFactory(username="Carol")
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.post("/admin/users/user/add/", _add_user_form(spelling))

    assert response.status_code == 200 and b"A user with that username already exists." in response.content
    assert User.objects.filter(username__iexact="carol").count() == 1
    # Django's own form asks username__iexact: UPPER() on every account's name, no index.
    assert not any('UPPER("users"."username"' in query["sql"] for query in queries)


def test_the_admin_adds_a_user_with_a_new_name(admin_client):
    response = admin_client.post("/admin/users/user/add/", _add_user_form("dora"))

    assert response.status_code == 302, response.context["adminform"].form.errors
    assert User.objects.get(username="dora").check_password("a-long-passphrase")
