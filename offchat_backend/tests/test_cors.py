import pytest

from users.tests.factories import UserFactory
from users.tests.helpers import client_for

pytestmark = pytest.mark.django_db
FRONTEND = "http://localhost:5173"


@pytest.fixture(autouse=True)
def frontend_allowed(settings):
    settings.CORS_ALLOWED_ORIGINS = [FRONTEND]


def test_a_preflight_from_the_frontend_may_send_the_token_and_if_none_match(client):
    response = client.options(
        "/api/users/all-users/",
        HTTP_ORIGIN=FRONTEND,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, if-none-match",
    )
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == FRONTEND
    allowed = {header.strip() for header in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "if-none-match", "content-type"} <= allowed


def test_the_frontend_can_read_the_etag_of_a_list():
    response = client_for(UserFactory()).get("/api/users/all-users/", HTTP_ORIGIN=FRONTEND)
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == FRONTEND
    assert "ETag" in response["Access-Control-Expose-Headers"]


def test_an_unlisted_origin_gets_no_cors_headers(client):
    response = client.options(
        "/api/users/login/", HTTP_ORIGIN="https://evil.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST"
    )
    assert "Access-Control-Allow-Origin" not in response


def test_cors_covers_the_api_only(client):
    response = client.get("/admin/login/", HTTP_ORIGIN=FRONTEND)
    assert "Access-Control-Allow-Origin" not in response
