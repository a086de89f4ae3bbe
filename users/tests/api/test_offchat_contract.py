"""The OffChat frontend's contract, one row per request it makes (issue: a drop-in for the
OffChat frontend). Each row does what the frontend does, with its exact paths and bodies,
and checks what the frontend reads."""

import json

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from users.models import OnlineStatus, PresenceSession, User
from users.tests.factories import PASSWORD, StaffFactory, UserFactory
from users.tests.helpers import assert_json, client_with_token

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a-new-and-longer-passphrase"


def frontend_login(user):
    """POST /api/auth/login/ as the frontend does; returns (answer, access, refresh)."""
    answer = assert_json(
        APIClient().post("/api/auth/login/", {"username": user.username, "password": PASSWORD}, format="json"), 200
    )
    tokens = answer.get("tokens") or answer
    return answer, tokens["access"], tokens["refresh"]


def stored_status(user):
    return User.objects.get(pk=user.pk).online_status


def session_of(access):
    return PresenceSession.objects.get(pk=RefreshToken(access, verify=False)["sid"])


def login_gives_tokens_and_a_user_with_a_role():
    admin, member = StaffFactory(), UserFactory()
    answer, access, refresh = frontend_login(admin)
    assert access and refresh
    assert {"id", "username", "role", "is_staff", "online_status"} <= answer["user"].keys()
    assert (answer["user"]["role"], answer["user"]["online_status"]) == ("admin", "online")
    assert frontend_login(member)[0]["user"]["role"] == "user"
    assert stored_status(member) == OnlineStatus.ONLINE


def refresh_after_a_401_gives_a_new_pair():
    _, _, refresh = frontend_login(UserFactory())
    answer = assert_json(APIClient().post("/api/auth/refresh/", {"refresh": refresh}, format="json"), 200)
    assert answer.keys() == {"access", "refresh"}
    assert client_with_token(answer["access"]).get("/api/users/profile/").status_code == 200
    # Single use: the old refresh token is spent.
    assert_json(APIClient().post("/api/auth/refresh/", {"refresh": refresh}, format="json"), 401)


def logout_with_no_body_ends_the_session_of_the_token_used():
    user = UserFactory()
    _, phone_access, _ = frontend_login(user)
    _, laptop_access, laptop_refresh = frontend_login(user)
    laptop = client_with_token(laptop_access)

    assert_json(laptop.post("/api/auth/logout/"), 200)

    assert session_of(laptop_access).revoked_at is not None
    assert session_of(phone_access).revoked_at is None
    assert stored_status(user) == OnlineStatus.ONLINE  # the phone is still live
    assert_json(laptop.get("/api/users/profile/"), 401)
    assert_json(APIClient().post("/api/auth/refresh/", {"refresh": laptop_refresh}, format="json"), 401)
    laptop_outstanding = OutstandingToken.objects.get(jti=RefreshToken(laptop_refresh, verify=False)["jti"])
    assert BlacklistedToken.objects.filter(token=laptop_outstanding).exists()
    assert BlacklistedToken.objects.count() == 1  # the phone's refresh token is not

    # Older builds: POST /api/users/logout/ {"refresh_token": ...}.
    phone_refresh = frontend_login(user)[2]
    client = client_with_token(phone_access)
    assert_json(client.post("/api/users/logout/", {"refresh_token": phone_refresh}, format="json"), 200)
    assert_json(client.post("/api/auth/logout/"), 200)
    assert session_of(phone_access).revoked_at is not None


def heartbeat_with_no_body_every_10_seconds():
    user = UserFactory()
    _, access, _ = frontend_login(user)
    answer = assert_json(client_with_token(access).post("/api/users/heartbeat/"), 200)
    assert answer["online_status"] == "online"


def all_users_carries_users_and_count_for_the_whole_directory():
    admin = StaffFactory()
    UserFactory.create_batch(120)
    _, access, _ = frontend_login(admin)
    answer = assert_json(client_with_token(access).get("/api/users/all-users/"), 200)
    assert answer["count"] == 121
    assert len(answer["users"]) == 121  # past the 50 of a default page: the whole directory
    row = answer["users"][0]
    expected = {"id", "username", "email", "first_name", "last_name", "online_status", "last_seen", "role"}
    assert expected | {"is_active", "date_joined"} <= row.keys()
    # Paginated clients still get their page.
    assert answer["results"] == answer["users"]
    paged = assert_json(client_with_token(access).get("/api/users/all-users/", {"page_size": 10}), 200)
    assert (len(paged["results"]), paged["count"], "users" in paged) == (10, 121, False)


def profile_is_the_signed_in_user():
    user = UserFactory()
    _, access, _ = frontend_login(user)
    answer = assert_json(client_with_token(access).get("/api/users/profile/"), 200)
    assert (answer["id"], answer["online_status"]) == (user.pk, "online")
    assert "last_seen" in answer


def force_logout_ends_every_session_of_the_user():
    target = UserFactory()
    target_clients = [client_with_token(frontend_login(target)[1]) for _ in range(3)]
    _, admin_access, _ = frontend_login(StaffFactory())

    answer = assert_json(client_with_token(admin_access).post(f"/api/users/admin/users/{target.pk}/force-logout/"), 200)

    assert answer["sessions_ended"] == 3
    assert stored_status(target) == OnlineStatus.OFFLINE
    assert not PresenceSession.objects.filter(user=target, revoked_at__isnull=True).exists()
    for client in target_clients:
        assert_json(client.get("/api/users/profile/"), 401)
    assert not OutstandingToken.objects.filter(user=target, blacklistedtoken__isnull=True).exists()


def dashboard_stats_count_users_for_the_online_card():
    admin = StaffFactory()
    UserFactory.create_batch(2)
    frontend_login(UserFactory())
    _, access, _ = frontend_login(admin)
    answer = assert_json(client_with_token(access).get("/api/admin/dashboard/stats/"), 200)
    assert answer["users"] == {"total": 4, "online": 2, "away": 0, "offline": 2}


def admin_tabs_ask_for_the_callers_permissions():
    _, access, _ = frontend_login(StaffFactory())
    answer = assert_json(client_with_token(access).get("/api/admin/my-permissions/"), 200)
    assert answer["role"] == "admin"
    assert {"view_users", "force_logout_user", "manage_users"} <= set(answer["permissions"])


def user_rows_carry_join_date():
    admin = StaffFactory()
    member = UserFactory()
    _, access, _ = frontend_login(admin)
    client = client_with_token(access)
    rows = [
        *assert_json(client.get("/api/users/all-users/"), 200)["users"],
        *assert_json(client.get("/api/users/admin/users/"), 200)["results"],
        assert_json(client.get(f"/api/users/admin/users/{member.pk}/"), 200),
        assert_json(client.get("/api/users/profile/"), 200),
    ]
    assert len(rows) == 6
    for row in rows:
        assert row["join_date"] == row["date_joined"]
        assert row["join_date"].startswith(str(User.objects.get(pk=row["id"]).date_joined.date()))


def password_change_from_the_profile_keeps_only_this_session():
    user = UserFactory()
    _, phone_access, phone_refresh = frontend_login(user)
    _, laptop_access, laptop_refresh = frontend_login(user)
    laptop = client_with_token(laptop_access)
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}

    answer = assert_json(laptop.put("/api/users/profile/", body, format="json"), 200)

    assert answer["id"] == user.pk and not {"current_password", "new_password"} & answer.keys()
    assert_json(laptop.get("/api/users/profile/"), 200)  # this session goes on
    assert_json(client_with_token(phone_access).get("/api/users/profile/"), 401)  # the others end
    assert session_of(phone_access).revoked_at is not None
    assert_json(APIClient().post("/api/auth/refresh/", {"refresh": phone_refresh}, format="json"), 401)
    assert_json(APIClient().post("/api/auth/refresh/", {"refresh": laptop_refresh}, format="json"), 200)
    assert stored_status(user) == OnlineStatus.ONLINE  # the laptop is still live
    old = {"username": user.username, "password": PASSWORD}
    assert_json(APIClient().post("/api/auth/login/", old, format="json"), 401)
    new = {"username": user.username, "password": NEW_PASSWORD}
    assert_json(APIClient().post("/api/auth/login/", new, format="json"), 200)
    # PATCH does the same.
    again = {"current_password": NEW_PASSWORD, "new_password": PASSWORD + "!"}
    assert_json(laptop.patch("/api/users/profile/", again, format="json"), 200)
    assert User.objects.get(pk=user.pk).check_password(PASSWORD + "!")


def admin_adds_a_user():
    _, access, _ = frontend_login(StaffFactory())
    body = {
        "username": "new.admin",
        "password": NEW_PASSWORD,
        "email": "new.admin@example.com",
        "role": "admin",
        "first_name": "New",
        "last_name": "Admin",
    }

    row = assert_json(client_with_token(access).post("/api/users/admin/users/", body, format="json"), 201)

    assert (row["username"], row["role"], row["is_staff"], row["online_status"]) == (
        "new.admin",
        "admin",
        True,
        "offline",
    )
    assert (row["email"], row["first_name"], row["last_name"]) == ("new.admin@example.com", "New", "Admin")
    assert "password" not in row and NEW_PASSWORD not in json.dumps(row)
    created = User.objects.get(username="new.admin")
    assert row["id"] == created.pk and created.is_staff and not created.is_superuser
    answer = assert_json(
        APIClient().post("/api/auth/login/", {"username": "new.admin", "password": NEW_PASSWORD}, format="json"), 200
    )
    assert answer["user"]["role"] == "admin"
    # Without a role: an ordinary user.
    plain = {"username": "plain", "password": NEW_PASSWORD}
    row = assert_json(client_with_token(access).post("/api/users/admin/users/", plain, format="json"), 201)
    assert (row["role"], row["is_staff"], row["email"]) == ("user", False, "")


def unload_beacon_ends_the_session_of_the_token_used():
    user = UserFactory()
    _, phone_access, _ = frontend_login(user)
    _, tab_access, tab_refresh = frontend_login(user)
    tab = client_with_token(tab_access)

    assert assert_json(tab.post("/api/users/heartbeat/", {"logout": True}, format="json"), 200) == {
        "detail": "Logged out."
    }

    assert session_of(tab_access).revoked_at is not None
    assert session_of(phone_access).revoked_at is None
    assert_json(tab.post("/api/users/heartbeat/"), 401)
    assert_json(APIClient().post("/api/auth/refresh/", {"refresh": tab_refresh}, format="json"), 401)
    assert stored_status(user) == OnlineStatus.ONLINE  # the phone is live
    assert_json(client_with_token(phone_access).post("/api/users/heartbeat/", {"logout": True}, format="json"), 200)
    assert stored_status(user) == OnlineStatus.OFFLINE


CONTRACT = [
    login_gives_tokens_and_a_user_with_a_role,
    refresh_after_a_401_gives_a_new_pair,
    logout_with_no_body_ends_the_session_of_the_token_used,
    heartbeat_with_no_body_every_10_seconds,
    all_users_carries_users_and_count_for_the_whole_directory,
    profile_is_the_signed_in_user,
    force_logout_ends_every_session_of_the_user,
    dashboard_stats_count_users_for_the_online_card,
    admin_tabs_ask_for_the_callers_permissions,
    user_rows_carry_join_date,
    password_change_from_the_profile_keeps_only_this_session,
    admin_adds_a_user,
    unload_beacon_ends_the_session_of_the_token_used,
]


@pytest.mark.parametrize("row", CONTRACT, ids=[row.__name__ for row in CONTRACT])
def test_the_offchat_frontend_contract(row):
    row()


# --- Unhappy paths and permissions of the new paths -------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/auth/logout/"),
        ("get", "/api/users/profile/"),
        ("post", "/api/users/admin/users/1/force-logout/"),
        ("get", "/api/admin/dashboard/stats/"),
    ],
)
def test_the_new_paths_need_a_token(method, path):
    response = getattr(APIClient(), method)(path)
    assert assert_json(response, 401)["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/api/users/admin/users/{id}/force-logout/"), ("get", "/api/admin/dashboard/stats/")],
)
def test_admin_paths_are_for_staff_only(method, path):
    victim = UserFactory()
    _, access, _ = frontend_login(victim)
    assert_json(getattr(client_with_token(access), method)(path.format(id=victim.pk)), 403)
    assert stored_status(victim) == OnlineStatus.ONLINE


def test_force_logout_of_an_unknown_user_is_a_json_404():
    _, access, _ = frontend_login(StaffFactory())
    assert_json(client_with_token(access).post("/api/users/admin/users/999999/force-logout/"), 404)


def test_logout_refuses_both_names_of_the_refresh_token_and_unknown_fields():
    user = UserFactory()
    _, access, refresh = frontend_login(user)
    client = client_with_token(access)
    both = {"refresh": refresh, "refresh_token": refresh}
    assert "refresh_token" in assert_json(client.post("/api/auth/logout/", both, format="json"), 400)
    assert "token" in assert_json(client.post("/api/auth/logout/", {"token": refresh}, format="json"), 400)
    assert_json(client.post("/api/users/logout/", {"refresh_token": "garbage"}, format="json"), 401)
    assert session_of(access).revoked_at is None  # nothing was ended by a refused logout
    assert stored_status(user) == OnlineStatus.ONLINE


def test_a_wrong_password_at_the_frontends_login_path_is_a_json_401():
    user = UserFactory()
    response = APIClient().post("/api/auth/login/", {"username": user.username, "password": "wrong"}, format="json")
    assert_json(response, 401)
    assert stored_status(user) == OnlineStatus.OFFLINE


# --- Unhappy paths of the paths added for the admin app -----------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/admin/my-permissions/"),
        ("post", "/api/users/admin/users/"),
        ("get", "/api/users/admin/users/{id}/"),
        ("put", "/api/users/profile/"),
        ("patch", "/api/users/profile/"),
    ],
)
def test_the_admin_apps_paths_need_a_token(method, path):
    response = getattr(APIClient(), method)(path.format(id=UserFactory().pk), {}, format="json")
    assert assert_json(response, 401)["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/api/admin/my-permissions/", None),
        ("get", "/api/users/admin/users/{id}/", None),
        ("post", "/api/users/admin/users/", {"username": "intruder", "password": NEW_PASSWORD, "role": "admin"}),
    ],
)
def test_the_admin_apps_staff_paths_answer_403_to_other_users(method, path, body):
    member = UserFactory()
    _, access, _ = frontend_login(member)
    response = getattr(client_with_token(access), method)(path.format(id=member.pk), body, format="json")
    assert "permission" in assert_json(response, 403)["detail"]
    assert not User.objects.filter(username="intruder").exists()


@pytest.mark.parametrize("user_id", ["999999", "not-a-number"])
def test_one_account_of_an_unknown_or_malformed_id_is_a_json_404(user_id):
    _, access, _ = frontend_login(StaffFactory())
    assert_json(client_with_token(access).get(f"/api/users/admin/users/{user_id}/"), 404)


ADD_USER_REFUSALS = [
    # (body, field named in the 400)
    ({"password": NEW_PASSWORD}, "username"),
    ({"username": "nopassword"}, "password"),
    ({"username": "taken", "password": NEW_PASSWORD}, "username"),
    ({"username": "TAKEN", "password": NEW_PASSWORD}, "username"),
    ({"username": "has space", "password": NEW_PASSWORD}, "username"),
    ({"username": "x" * 151, "password": NEW_PASSWORD}, "username"),
    ({"username": 12345, "password": NEW_PASSWORD}, "username"),
    ({"username": "short", "password": "abc1"}, "password"),
    ({"username": "common", "password": "password123"}, "password"),
    ({"username": "similar", "password": "similar"}, "password"),
    ({"username": "digits", "password": "83749261"}, "password"),
    ({"username": "long", "password": "p" * 129}, "password"),
    ({"username": "moderator", "password": NEW_PASSWORD, "role": "moderator"}, "role"),
    ({"username": "bademail", "password": NEW_PASSWORD, "email": "not-an-email"}, "email"),
    ({"username": "superuser", "password": NEW_PASSWORD, "is_superuser": True}, "is_superuser"),
    ({"username": "staffflag", "password": NEW_PASSWORD, "is_staff": True}, "is_staff"),
    ({"username": "names", "password": NEW_PASSWORD, "first_name": ["A"]}, "first_name"),
]


@pytest.mark.parametrize(("body", "field"), ADD_USER_REFUSALS, ids=[field for _, field in ADD_USER_REFUSALS])
def test_adding_a_user_refuses_bad_input_by_field_and_writes_nothing(body, field):
    UserFactory(username="taken")
    _, access, _ = frontend_login(StaffFactory())
    before = User.objects.count()

    answer = assert_json(client_with_token(access).post("/api/users/admin/users/", body, format="json"), 400)

    assert answer[field]
    assert User.objects.count() == before


def test_adding_a_user_with_a_body_that_is_not_an_object_is_a_400():
    _, access, _ = frontend_login(StaffFactory())
    before = User.objects.count()
    assert_json(client_with_token(access).post("/api/users/admin/users/", ["x"], format="json"), 400)
    assert User.objects.count() == before


PASSWORD_CHANGE_REFUSALS = [
    ({"current_password": "wrong", "new_password": NEW_PASSWORD}, "current_password"),
    ({"current_password": PASSWORD, "new_password": "abc1"}, "new_password"),
    ({"current_password": PASSWORD, "new_password": "password123"}, "new_password"),
    ({"current_password": PASSWORD}, "new_password"),
    ({"new_password": NEW_PASSWORD}, "current_password"),
    ({"current_password": PASSWORD, "new_password": 12345678901}, "new_password"),
    ({"current_password": PASSWORD, "new_password": NEW_PASSWORD, "password": NEW_PASSWORD}, "password"),
    # A refused password rolls back the names sent with it.
    ({"current_password": "wrong", "new_password": NEW_PASSWORD, "first_name": "Changed"}, "current_password"),
]


@pytest.mark.parametrize("method", ["put", "patch"])
@pytest.mark.parametrize(
    ("body", "field"),
    PASSWORD_CHANGE_REFUSALS,
    ids=[f"{i}-{field}" for i, (_, field) in enumerate(PASSWORD_CHANGE_REFUSALS)],
)
def test_a_refused_password_change_names_the_field_and_changes_nothing(method, body, field):
    user = UserFactory()
    _, other_access, _ = frontend_login(user)
    _, access, _ = frontend_login(user)

    answer = assert_json(getattr(client_with_token(access), method)("/api/users/profile/", body, format="json"), 400)

    assert answer[field]
    stored = User.objects.get(pk=user.pk)
    assert stored.check_password(PASSWORD)
    assert stored.first_name == user.first_name
    assert session_of(other_access).revoked_at is None
    assert not BlacklistedToken.objects.exists()


def test_a_wrong_current_password_says_so_with_a_code():
    _, access, _ = frontend_login(UserFactory())
    body = {"current_password": "wrong", "new_password": NEW_PASSWORD}
    answer = assert_json(client_with_token(access).put("/api/users/profile/", body, format="json"), 400)
    assert answer == {"current_password": ["The current password is wrong."], "code": "wrong_password"}


def test_password_changes_are_throttled_per_user_and_reading_the_profile_is_not(monkeypatch):
    from users.api.throttling import PasswordChangeThrottle

    monkeypatch.setitem(PasswordChangeThrottle.THROTTLE_RATES, "password_change", "2/min")
    user = UserFactory()
    _, access, _ = frontend_login(user)
    client = client_with_token(access)
    wrong = {"current_password": "wrong", "new_password": NEW_PASSWORD}
    assert [client.put("/api/users/profile/", wrong, format="json").status_code for _ in range(3)] == [400, 400, 429]
    right = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    response = client.put("/api/users/profile/", right, format="json")
    assert assert_json(response, 429)["detail"] and int(response["Retry-After"]) >= 1
    assert User.objects.get(pk=user.pk).check_password(PASSWORD)
    assert_json(client.get("/api/users/profile/"), 200)
    assert_json(client.patch("/api/users/profile/", {"first_name": "Still"}, format="json"), 200)


@pytest.mark.parametrize(
    "body",
    [{"logout": "yes"}, {"logout": 1}, {"logout": None}, {"logout": True, "status": "away"}, {"logout": True, "x": 1}],
)
def test_a_malformed_unload_beacon_is_a_400_and_ends_nothing(body):
    user = UserFactory()
    _, access, _ = frontend_login(user)
    answer = assert_json(client_with_token(access).post("/api/users/heartbeat/", body, format="json"), 400)
    assert set(answer) & {"logout", "status", "x"}
    assert session_of(access).revoked_at is None
    assert stored_status(user) == OnlineStatus.ONLINE


def test_a_heartbeat_with_logout_false_is_an_ordinary_heartbeat():
    user = UserFactory()
    _, access, _ = frontend_login(user)
    answer = assert_json(client_with_token(access).post("/api/users/heartbeat/", {"logout": False}, format="json"), 200)
    assert (answer["id"], answer["online_status"]) == (user.pk, "online")
    assert session_of(access).revoked_at is None
