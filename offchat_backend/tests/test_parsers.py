"""Request bodies: only JSON, bounded in size and nesting; every refusal a JSON 4xx that
writes nothing."""

import json

import pytest
from django.test import Client

from users.models import User
from users.tests import helpers
from users.tests.factories import UserFactory
from users.tests.helpers import HEARTBEAT, LOGIN, client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def user_and_client():
    user = UserFactory()
    return user, client_for(user)


def _stored(user):
    stored = User.objects.get(pk=user.pk)
    return stored.online_status, stored.last_seen, stored.presence_update_id


def assert_json_error(response, status_code):
    """The shared check, plus: every refusal here has a non-empty JSON body."""
    body = helpers.assert_json_error(response, status_code)
    assert body
    return body


@pytest.mark.parametrize(
    "body",
    ["{not json", '{"status": "away"', "", "\ufeff{}", '{"status": NaN}', "null", "[]", '"away"', "1e999999"],
    ids=["broken", "truncated", "empty-declared-json", "bom", "nan", "null", "list", "string", "huge-number"],
)
def test_malformed_or_misshapen_json_is_a_json_400_and_writes_nothing(user_and_client, body):
    user, client = user_and_client
    client.put("/api/users/me/presence/", {"status": "away"}, format="json")
    before = _stored(user)

    response = client.put("/api/users/me/presence/", data=body, content_type="application/json")

    if body == "":
        # No body: the serializer says what is missing.
        assert assert_json_error(response, 400) == {"status": ["This field is required."]}
    else:
        assert_json_error(response, 400)
    assert _stored(user) == before


@pytest.mark.parametrize(
    "content_type, body",
    [
        ("application/x-www-form-urlencoded", "status=away"),
        (
            "multipart/form-data; boundary=x",
            '--x\r\nContent-Disposition: form-data; name="status"\r\n\r\naway\r\n--x--',
        ),
        ("text/plain", '{"status": "away"}'),
        ("application/xml", "<status>away</status>"),
        ("application/json-patch+json", "[]"),
    ],
)
def test_other_content_types_are_a_json_415(user_and_client, content_type, body):
    user, client = user_and_client
    response = client.post(HEARTBEAT, data=body, content_type=content_type)
    assert "Unsupported media type" in assert_json_error(response, 415)["detail"]


def test_json_with_a_charset_is_accepted(user_and_client):
    _, client = user_and_client
    response = client.post(HEARTBEAT, data='{"status": "away"}', content_type="application/json; charset=utf-8")
    assert response.status_code == 200
    assert response.json()["online_status"] == "away"


def test_a_body_over_the_limit_is_a_json_413_and_writes_nothing(user_and_client, settings):
    user, client = user_and_client
    before = _stored(user)
    padding = "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = client.post(
        HEARTBEAT, data=json.dumps({"status": "away", "padding": padding}), content_type="application/json"
    )
    assert "larger than" in assert_json_error(response, 413)["detail"]
    assert _stored(user)[0] == before[0]


def test_a_body_just_under_the_limit_is_parsed(user_and_client, settings):
    _, client = user_and_client
    body = json.dumps({"status": "away", "padding": ""})
    body = body.replace('""', '"' + "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE - len(body)) + '"')
    assert len(body) == settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    # Parsed, then refused for its unknown field: the size did not stop it.
    assert assert_json_error(client.post(HEARTBEAT, data=body, content_type="application/json"), 400) == {
        "padding": ["Unknown field."]
    }


def test_the_limit_holds_for_anonymous_endpoints_too():
    response = Client().post(
        LOGIN, data=json.dumps({"username": "a" * 100_000, "password": "x"}), content_type="application/json"
    )
    assert_json_error(response, 413)


def test_json_nested_too_deep_for_the_parser_is_a_400_not_a_500(user_and_client):
    _, client = user_and_client
    deep = "[" * 20_000 + "]" * 20_000
    response = Client(raise_request_exception=False, HTTP_AUTHORIZATION=client._credentials["HTTP_AUTHORIZATION"]).post(
        HEARTBEAT, data=deep, content_type="application/json"
    )
    assert "JSON parse error" in assert_json_error(response, 400)["detail"]


def test_an_integer_beyond_64_bits_is_a_400_naming_its_field(user_and_client):
    user, client = user_and_client
    before = _stored(user)
    response = client.post(HEARTBEAT, data='{"status": 1' + "0" * 30 + "}", content_type="application/json")
    assert list(assert_json_error(response, 400)) == ["status"]
    assert _stored(user) == before


@pytest.mark.parametrize("status", [1, True, None, ["away"], {"status": "away"}, "AWAY", "away ", "😴", "a" * 10_000])
def test_a_heartbeat_status_of_the_wrong_type_or_value_is_a_400_naming_the_field(user_and_client, status):
    user, client = user_and_client
    before = _stored(user)
    body = assert_json_error(client.post(HEARTBEAT, {"status": status}, format="json"), 400)
    assert list(body) == ["status"]
    assert _stored(user) == before
