import pytest

from users.models import OnlineStatus, User
from users.services import presence
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(is_staff=True, is_superuser=True))
    return client


def test_changelist_shows_presence_and_filters_by_status(admin_client):
    online = UserFactory(username="present-person", online_status=OnlineStatus.ONLINE)
    UserFactory(username="absent-person")
    page = admin_client.get("/admin/users/user/", {"online_status__exact": "online"}).content.decode()
    assert online.username in page
    assert "absent-person" not in page


def test_presence_is_read_only_in_the_admin_form(admin_client):
    user = UserFactory(first_name="Old")
    presence.start_session(user=user)
    user.refresh_from_db()
    assert admin_client.get(f"/admin/users/user/{user.pk}/change/").status_code == 200

    response = admin_client.post(
        f"/admin/users/user/{user.pk}/change/",
        {
            "username": user.username,
            "first_name": "New",
            "last_name": user.last_name,
            "email": user.email,
            "is_active": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "online_status": "offline",  # not a form field: ignored
            "last_seen_0": "2020-01-01",
            "last_seen_1": "00:00:00",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    stored = User.objects.get(pk=user.pk)
    assert stored.first_name == "New"
    assert (stored.online_status, stored.last_seen) == (OnlineStatus.ONLINE, user.last_seen)
