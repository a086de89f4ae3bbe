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


def test_editing_a_user_in_the_admin_does_not_overwrite_presence(admin_client):
    user = UserFactory(first_name="Old")
    form = admin_client.get(f"/admin/users/user/{user.pk}/change/")
    assert form.status_code == 200
    presence.mark_online(user=User.objects.get(pk=user.pk))  # a login lands while the form is open

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
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    user.refresh_from_db()
    assert user.first_name == "New"
    assert user.online_status == OnlineStatus.ONLINE
