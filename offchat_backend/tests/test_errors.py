import pytest
from django.core.exceptions import ValidationError
from django.db import OperationalError
from django.test import Client
from django.urls import path
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import AllowAny

from offchat_backend.errors import DomainError
from users.api.authentication import SessionJWTAuthentication


@api_view(["GET"])
@permission_classes([AllowAny])
def raises_django_validation_error(request):
    raise ValidationError({"online_status": "not allowed here"})


@api_view(["GET"])
@permission_classes([AllowAny])
def loses_the_database(request):
    raise OperationalError("server closed the connection unexpectedly")


class TooLate(DomainError):
    status = 409
    code = "too_late"
    message = "It is too late for that."


class NoSuchPlace(DomainError):
    code = "no_such_place"
    field = "place"


class StaleTicket(DomainError):
    status = 401
    code = "stale_ticket"
    message = "This ticket is stale."


class NotYours(DomainError):
    status = 403
    message = "Not yours."


@api_view(["GET"])
@permission_classes([AllowAny])
def raises(request, name):
    raise {"too-late": TooLate, "no-such-place": NoSuchPlace("Nowhere."), "not-yours": NotYours}[name]


@api_view(["GET"])
@permission_classes([AllowAny])
@authentication_classes([SessionJWTAuthentication])
def stale_with_a_scheme(request):
    raise StaleTicket


@api_view(["GET"])
@permission_classes([AllowAny])
@authentication_classes([])
def stale_without_a_scheme(request):
    raise StaleTicket


def crashes(request):
    raise RuntimeError("a bug")


urlpatterns = [
    path("validation/", raises_django_validation_error),
    path("crash/", crashes),
    path("database-gone/", loses_the_database),
    path("domain/<str:name>/", raises),
    path("stale/with-scheme/", stale_with_a_scheme),
    path("stale/without-scheme/", stale_without_a_scheme),
]
handler404 = "offchat_backend.errors.not_found"
handler500 = "offchat_backend.errors.server_error"

pytestmark = pytest.mark.urls(__name__)


def test_a_django_validation_error_from_a_service_is_a_json_400(client):
    response = client.get("/validation/")
    assert response.status_code == 400
    assert response.json() == {"online_status": ["not allowed here"]}


def test_a_lost_database_is_a_503_with_retry_after_not_a_500(client):
    response = client.get("/database-gone/")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("The service is briefly unavailable")
    assert response["Retry-After"] == "5"


def test_an_unhandled_error_is_a_json_500_not_an_html_page():
    response = Client(raise_request_exception=False).get("/crash/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Server error."}


def test_the_project_urlconf_uses_the_json_handlers():
    from offchat_backend import urls

    assert urls.handler400 == "offchat_backend.errors.bad_request"
    assert urls.handler404 == handler404
    assert urls.handler500 == handler500


@pytest.mark.urls("offchat_backend.urls")
def test_a_request_django_rejects_before_any_view_is_a_json_400():
    response = Client(raise_request_exception=False).get("/api/users/all-users/", headers={"host": "evil.example"})
    assert response.status_code == 400
    assert response.json() == {"detail": "Bad request."}


@pytest.mark.parametrize(
    ("name", "status", "body"),
    [
        ("too-late", 409, {"detail": "It is too late for that.", "code": "too_late"}),
        ("no-such-place", 400, {"place": ["Nowhere."], "code": "no_such_place"}),
        ("not-yours", 403, {"detail": "Not yours."}),
    ],
)
def test_a_domain_error_is_answered_with_its_own_status_and_code(client, name, status, body):
    response = client.get(f"/domain/{name}/")
    assert response.status_code == status
    assert response.json() == body


def test_a_domain_401_carries_the_views_challenge_as_drf_does(client):
    response = client.get("/stale/with-scheme/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.json() == {"detail": "This ticket is stale.", "code": "stale_ticket"}


def test_a_domain_401_from_a_view_with_no_scheme_is_a_403_as_drf_does(client):
    response = client.get("/stale/without-scheme/")
    assert response.status_code == 403
    assert "WWW-Authenticate" not in response
