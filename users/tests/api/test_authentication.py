"""The session check of users.api.authentication, through real requests."""

import pytest
from rest_framework_simplejwt.tokens import RefreshToken

from users.tests.factories import UserFactory
from users.tests.helpers import ALL_USERS, MY_PRESENCE, assert_json_error, client_with_token, log_in

pytestmark = pytest.mark.django_db


def test_the_revocation_check_rides_on_the_user_lookup(user_client, django_assert_num_queries):
    # Authentication loads session and user in one join; a fresh session writes nothing.
    with django_assert_num_queries(1):
        assert user_client.get(MY_PRESENCE).status_code == 200


def test_a_token_without_a_session_is_401(user):
    legacy = RefreshToken.for_user(user)  # as issued before sessions existed
    assert_json_error(client_with_token(legacy.access_token).get(ALL_USERS), 401)


def test_a_token_naming_an_unknown_or_malformed_session_is_401(user):
    for sid in ("00000000-0000-0000-0000-000000000000", "not-a-uuid", 42):
        token = RefreshToken.for_user(user)
        token["sid"] = sid
        assert_json_error(client_with_token(token.access_token).get(ALL_USERS), 401)


def test_another_users_session_id_in_a_token_is_401(api_client, user):
    other = log_in(api_client, UserFactory()).json()
    token = RefreshToken.for_user(user)
    token["sid"] = str(other["session_id"])
    assert_json_error(client_with_token(token.access_token).get(ALL_USERS), 401)


def test_a_token_naming_a_malformed_user_is_401(api_client, user):
    token = RefreshToken(log_in(api_client, user).json()["refresh"])
    token["user_id"] = "not-a-number"
    assert_json_error(client_with_token(token.access_token).get(ALL_USERS), 401)
