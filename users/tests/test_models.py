from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.utils import timezone

from users.models import OnlineStatus, User
from users.services import presence
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db
NOW = timezone.now().replace(microsecond=0)


def test_user_is_the_auth_user_model_stored_in_table_users():
    assert settings.AUTH_USER_MODEL == "users.User"
    assert User._meta.db_table == "users"


def test_new_user_starts_offline_and_never_seen():
    user = UserFactory()
    user.refresh_from_db()
    assert user.online_status == OnlineStatus.OFFLINE
    assert user.last_seen is None
    assert not user.is_online


def test_ops_verification_sql_works_as_typed():
    with time_machine.travel(NOW, tick=False):
        UserFactory(username="admin").set_online()
    with connection.cursor() as cursor:
        cursor.execute("SELECT username, online_status, last_seen FROM users WHERE username='admin';")
        rows = cursor.fetchall()
    assert len(rows) == 1
    username, online_status, last_seen = rows[0]
    assert (username, online_status) == ("admin", "online")
    assert last_seen is not None


@time_machine.travel(NOW, tick=False)
def test_set_online_persists_status_and_last_seen():
    user = UserFactory()
    user.set_online()
    assert (user.online_status, user.last_seen) == (OnlineStatus.ONLINE, NOW)
    user.refresh_from_db()
    assert (user.online_status, user.last_seen) == (OnlineStatus.ONLINE, NOW)
    assert user.is_online


@time_machine.travel(NOW, tick=False)
def test_set_offline_records_the_moment_the_user_left():
    user = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=NOW - timedelta(minutes=1))
    user.set_offline()
    user.refresh_from_db()
    assert (user.online_status, user.last_seen) == (OnlineStatus.OFFLINE, NOW)
    assert not user.is_online


def test_set_away_changes_the_status_only():
    seen = NOW - timedelta(seconds=30)
    user = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=seen)
    user.set_away()
    user.refresh_from_db()
    assert (user.online_status, user.last_seen) == (OnlineStatus.AWAY, seen)
    assert not user.is_online


@time_machine.travel(NOW, tick=False)
def test_update_last_seen_counts_as_activity():
    user = UserFactory(last_seen=NOW - timedelta(hours=1))
    user.update_last_seen()
    user.refresh_from_db()
    assert (user.online_status, user.last_seen) == (OnlineStatus.ONLINE, NOW)


def test_saving_a_stale_instance_does_not_undo_a_presence_write():
    stale_copy = UserFactory()
    presence.mark_online(user=User.objects.get(pk=stale_copy.pk))

    stale_copy.first_name = "Renamed"
    stale_copy.save()

    stored = User.objects.get(pk=stale_copy.pk)
    assert stored.first_name == "Renamed"
    assert stored.online_status == OnlineStatus.ONLINE
    assert stored.last_seen is not None


def test_saving_with_explicit_update_fields_is_respected():
    user = UserFactory()
    user.first_name, user.last_name = "Ada", "Lovelace"
    user.save(update_fields=["first_name"])
    user.refresh_from_db()
    assert (user.first_name, user.last_name) != ("Ada", "Lovelace")
    assert user.first_name == "Ada"
