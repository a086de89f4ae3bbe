import pytest
from django.core.exceptions import ValidationError
from django.db import OperationalError
from django.test import Client
from django.urls import path
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny


@api_view(["GET"])
@permission_classes([AllowAny])
def raises_django_validation_error(request):
    raise ValidationError({"online_status": "not allowed here"})


@api_view(["GET"])
@permission_classes([AllowAny])
def loses_the_database(request):
    raise OperationalError("server closed the connection unexpectedly")


def crashes(request):
    raise RuntimeError("a bug")


urlpatterns = [
    path("validation/", raises_django_validation_error),
    path("crash/", crashes),
    path("database-gone/", loses_the_database),
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
