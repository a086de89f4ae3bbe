"""Who gets in and what they may change: forged and misused tokens, staff-only endpoints,
other users' presence, and writable fields (mass assignment)."""

import base64
import json
from datetime import timedelta

import jwt
import pytest
import time_machine
from django.conf import settings
from django.urls import get_resolver, resolve
from django.utils import timezone

from users.models import OnlineStatus, User
from users.services import auth
from users.tests.factories import PASSWORD, StaffFactory, UserFactory
from users.tests.helpers import HEARTBEAT, ME, client_for, client_with_token

pytestmark = pytest.mark.django_db


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def _snapshot(user):
    user = User.objects.get(pk=user.pk)
    return (user.online_status, user.last_seen, user.is_staff, user.is_superuser, user.share_presence)


def _forge_with_alg_none(token: str) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{token.split('.')[1]}."


def _change_claims(token: str, **changes) -> str:
    """The same header and signature over a changed payload."""
    header, _, signature = token.split(".")
    payload = _b64(json.dumps({**_claims(token), **changes}).encode())
    return f"{header}.{payload}.{signature}"


def _flip_signature(token: str) -> str:
    header, payload, signature = token.split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    return f"{header}.{payload}.{signature[:middle]}{flipped}{signature[middle + 1 :]}"


def _signed_with_another_key(token: str) -> str:
    return jwt.encode(_claims(token), "another-secret-key-of-sufficient-length-0123456789", algorithm="HS256")


FORGERIES = {
    "tampered signature": lambda tokens, other: _flip_signature(tokens.access),
    "payload changed to another user": lambda tokens, other: _change_claims(tokens.access, user_id=other.pk),
    "alg none": lambda tokens, other: _forge_with_alg_none(tokens.access),
    "alg none naming staff": lambda tokens, other: _forge_with_alg_none(
        _change_claims(tokens.access, user_id=other.pk)
    ),
    "signed with another key": lambda tokens, other: _signed_with_another_key(tokens.access),
    "refresh token as access": lambda tokens, other: tokens.refresh,
    "empty": lambda tokens, other: "",
    "not a jwt": lambda tokens, other: "a.b.c",
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_forged_and_misused_tokens_are_401_and_touch_nobody(user, staff, forgery):
    tokens = auth.log_in(user=user)
    forged = FORGERIES[forgery](tokens, staff)
    before = {person.pk: _snapshot(person) for person in (user, staff)}

    with time_machine.travel(timezone.now() + timedelta(minutes=1)):
        client = client_with_token(forged)
        for response in (client.post(HEARTBEAT), client.get(ME), client.get("/api/users/admin/users/")):
            assert response.status_code == 401, (forgery, response.content)
            assert response["Content-Type"] == "application/json"
            assert response.has_header("WWW-Authenticate")

    assert {person.pk: _snapshot(person) for person in (user, staff)} == before


def test_the_genuine_token_works_so_the_forgeries_fail_for_their_forgery(user):
    client = client_with_token(auth.log_in(user=user).access)
    assert [client.post(HEARTBEAT).status_code, client.get(ME).status_code] == [200, 200]


def test_an_expired_access_token_is_401(user):
    tokens = auth.log_in(user=user)
    expired_at = timezone.now() + settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"] + timedelta(seconds=1)
    with time_machine.travel(expired_at):
        response = client_with_token(tokens.access).post(HEARTBEAT)
    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"


@pytest.mark.parametrize("fate", ["deactivated", "deleted"])
def test_an_access_token_of_a_deactivated_or_deleted_user_is_401(user, fate):
    client = client_for(user)
    if fate == "deleted":
        user.delete()
    else:
        User.objects.filter(pk=user.pk).update(is_active=False)
    for response in (client.post(HEARTBEAT), client.get(ME)):
        assert response.status_code == 401, response.content
        assert response["Content-Type"] == "application/json"


# --- Staff-only endpoints -------------------------------------------------------------
NEW_ACCOUNT = "made-by-an-admin-request"


def _admin_requests(target, session):
    """Every operation of the admin API, with valid arguments: only the permission refuses."""
    users = "/api/users/admin/users/"
    return [
        ("get", users, None),
        ("post", users, {"username": NEW_ACCOUNT, "password": "a-long-enough-passphrase"}),
        ("get", f"{users}{target.pk}/", None),
        ("get", f"{users}online/", None),
        ("get", f"{users}summary/", None),
        ("get", f"{users}{target.pk}/online-status/", None),
        ("post", f"{users}{target.pk}/set-online-status/", {"online_status": OnlineStatus.OFFLINE}),
        ("get", f"{users}{target.pk}/sessions/", None),
        ("delete", f"{users}{target.pk}/sessions/{session.pk}/", None),
        ("post", f"{users}{target.pk}/force-logout/", None),
    ]


def test_the_list_of_admin_operations_covers_every_admin_route(user):
    admin_routes = {
        name for name in get_resolver().reverse_dict if isinstance(name, str) and name.startswith("admin-users-")
    }
    session = auth.log_in(user=user).session
    covered = {resolve(path).url_name for _method, path, _body in _admin_requests(user, session)}
    assert covered == admin_routes


@pytest.mark.parametrize("who", ["user", "anonymous"])
def test_non_staff_reach_no_admin_operation_and_change_nothing(user, who):
    victim = UserFactory()
    victim_client = client_for(victim)
    victim_client.post(HEARTBEAT)
    session = victim.presence_sessions.get()
    before = _snapshot(victim)
    client = client_for(user) if who == "user" else client_with_token("")

    for method, path, body in _admin_requests(victim, session):
        response = getattr(client, method)(path, body, format="json")
        assert response.status_code == (403 if who == "user" else 401), (method, path, response.content)
        assert response["Content-Type"] == "application/json"

    assert _snapshot(victim) == before
    assert not User.objects.filter(username=NEW_ACCOUNT).exists()
    session.refresh_from_db()
    assert session.is_live and session.revoked_at is None
    assert victim_client.get(ME).status_code == 200


def test_staff_can_do_what_non_staff_cannot(user):
    staff_client = client_for(StaffFactory())
    session = auth.log_in(user=user).session
    for method, path, body in _admin_requests(user, session):
        response = getattr(staff_client, method)(path, body, format="json")
        assert response.status_code in (200, 201, 204), (method, path, response.content)


# --- Other users' presence and privacy ---------------------------------------------------
def test_a_user_cannot_change_another_users_presence_privacy_or_sessions(user):
    other = UserFactory()
    other_tokens = auth.log_in(user=other)
    other_session = other.presence_sessions.get()
    before = _snapshot(other)
    client = client_for(user)

    attempts = [
        client.patch(ME, {"id": other.pk, "share_presence": False}, format="json"),
        client.patch(ME, {"username": other.username}, format="json"),
        client.put("/api/users/me/presence/", {"status": "away", "user": other.pk}, format="json"),
        client.post(HEARTBEAT, {"status": "away", "user_id": other.pk}, format="json"),
        client.delete(f"/api/users/me/sessions/{other_session.pk}/"),
        client.post("/api/users/logout/", {"refresh": other_tokens.refresh}, format="json"),
    ]

    assert [response.status_code for response in attempts] == [400, 400, 400, 400, 404, 403]
    assert all(response["Content-Type"] == "application/json" for response in attempts)
    assert _snapshot(other) == before
    other_session.refresh_from_db()
    assert other_session.revoked_at is None
    assert User.objects.get(pk=user.pk).username == user.username


# --- Mass assignment ----------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [
        ("is_staff", True),
        ("is_superuser", True),
        ("is_active", False),
        ("username", "admin"),
        ("email", "attacker@example.com"),
        ("online_status", "online"),
        ("last_seen", "2030-01-01T00:00:00Z"),
        ("manual_status", "away"),
        ("password", "new-password-123"),
        ("groups", [1]),
        ("user_permissions", [1]),
        ("id", 999),
    ],
)
def test_no_writable_field_makes_a_user_staff_or_changes_what_is_not_theirs_to_change(user, field, value):
    client = client_for(user)
    before = _snapshot(user), User.objects.get(pk=user.pk).email, User.objects.get(pk=user.pk).password

    # A name Faker never gives, so that finding it stored can only mean a half-applied PATCH.
    response = client.patch(ME, {"first_name": "Ann-Refused-42", field: value}, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()
    stored = User.objects.get(pk=user.pk)
    assert (_snapshot(user), stored.email, stored.password) == before
    assert stored.first_name != "Ann-Refused-42"  # refused whole, not half-applied
    assert stored.check_password(PASSWORD)


def test_the_writable_fields_still_write(user):
    response = client_for(user).patch(ME, {"first_name": "Ann", "share_presence": False}, format="json")
    assert response.status_code == 200, response.content
    stored = User.objects.get(pk=user.pk)
    assert (stored.first_name, stored.share_presence) == ("Ann", False)


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/users/login/", {"username": "u", "password": "p", "is_staff": True}),
        ("/api/users/token/refresh/", {"refresh": "x", "access": "y"}),
        ("/api/users/logout/", {"refresh": "x", "all": True}),
        (HEARTBEAT, {"stauts": "away"}),
        ("/api/users/me/presence/", {"status": "away", "until": "tomorrow"}),
    ],
)
def test_every_write_endpoint_refuses_unknown_fields_by_name(user, path, body):
    client = client_for(user)
    response = (
        client.put(path, body, format="json") if path.endswith("presence/") else client.post(path, body, format="json")
    )
    assert response.status_code == 400, response.content
    unknown = set(body) - {"username", "password", "refresh", "status"}
    assert unknown <= set(response.json())


@pytest.mark.parametrize(
    "body", [{"share_presence": 0}, {"share_presence": "false"}, {"first_name": 0}, {"last_name": ["x"]}]
)
def test_account_fields_take_only_their_json_type(user, body):
    client = client_for(user)
    before = User.objects.get(pk=user.pk)
    response = client.patch(ME, body, format="json")
    assert response.status_code == 400, response.content
    assert list(response.json()) == list(body)
    after = User.objects.get(pk=user.pk)
    assert (after.share_presence, after.first_name, after.last_name) == (
        before.share_presence,
        before.first_name,
        before.last_name,
    )
