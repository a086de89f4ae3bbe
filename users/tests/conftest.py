import pytest
from rest_framework.test import APIClient

from users.tests.factories import StaffFactory, UserFactory
from users.tests.helpers import client_for


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def staff(db):
    return StaffFactory()


@pytest.fixture
def user_client(user):
    return client_for(user)


@pytest.fixture
def staff_client(staff):
    return client_for(staff)


@pytest.fixture
def deferred_activity(settings, monkeypatch):
    """Requests defer their activity writes (PostgreSQL), to a buffer of the test's own that
    only an explicit flush (presence.write_deferred_activity) writes, unless the test shortens
    PRESENCE_WRITE_BATCH_INTERVAL; its thread is stopped, and its connection closed, after."""
    from offchat_backend.write_behind import WriteBehind
    from users.services import presence

    settings.PRESENCE_WRITE_BATCH_INTERVAL = 59  # the longest the transition margin allows
    buffer = WriteBehind(name="test activity", write=presence._write_deferred, merge=presence._later)
    monkeypatch.setattr(presence, "_DEFERRED_ACTIVITY", buffer)
    yield buffer
    buffer.close()
