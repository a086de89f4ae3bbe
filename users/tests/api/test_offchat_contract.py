"""The OffChat frontend's contract, one row per request it makes (issue: a drop-in for the
OffChat frontend). Each row does what the frontend does, with its exact paths and bodies,
and checks what the frontend reads."""

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from users.models import OnlineStatus, PresenceSession, User
from users.tests.factories import PASSWORD, StaffFactory, UserFactory
from users.tests.helpers import assert_json, client_with_token

pytestmark = pytest.mark.django_db


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


CONTRACT = [
    login_gives_tokens_and_a_user_with_a_role,
    refresh_after_a_401_gives_a_new_pair,
    logout_with_no_body_ends_the_session_of_the_token_used,
    heartbeat_with_no_body_every_10_seconds,
    all_users_carries_users_and_count_for_the_whole_directory,
    profile_is_the_signed_in_user,
    force_logout_ends_every_session_of_the_user,
    dashboard_stats_count_users_for_the_online_card,
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
