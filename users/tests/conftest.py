import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from users.tests.factories import StaffFactory, UserFactory


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def staff(db):
    return StaffFactory()


def client_with_token(access):
    """An API client that sends `access` as its Bearer token, as a logged-in browser does."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def client_for(user):
    """An API client with a real access token of `user`."""
    return client_with_token(RefreshToken.for_user(user).access_token)


@pytest.fixture
def user_client(user):
    return client_for(user)


@pytest.fixture
def staff_client(staff):
    return client_for(staff)
