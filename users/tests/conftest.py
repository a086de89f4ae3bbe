import pytest
from rest_framework.test import APIClient

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
    """An API client with a real access token of `user`, from a real login (a new session)."""
    from users.services import auth

    return client_with_token(auth.log_in(user=user).access)


@pytest.fixture
def user_client(user):
    return client_for(user)


@pytest.fixture
def staff_client(staff):
    return client_for(staff)
