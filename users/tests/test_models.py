import pytest
import time_machine
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from users.models import OnlineStatus, User
from users.presence_rules import effective_status
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
    assert effective_status(user=user) != OnlineStatus.ONLINE


def test_ops_verification_sql_works_as_typed():
    with time_machine.travel(NOW, tick=False):
        presence.start_session(user=UserFactory(username="admin"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT username, online_status, last_seen FROM users WHERE username='admin';")
        rows = cursor.fetchall()
    assert len(rows) == 1
    username, online_status, last_seen = rows[0]
    assert (username, online_status) == ("admin", "online")
    assert last_seen is not None


def test_a_new_user_enters_the_change_feed():
    first, second = UserFactory(), UserFactory()
    assert 0 < first.presence_update_id < second.presence_update_id
    assert User.objects.get(pk=second.pk).presence_update_id == second.presence_update_id


def test_saving_a_stale_instance_does_not_undo_a_presence_write():
    stale_copy = UserFactory()
    presence.start_session(user=User.objects.get(pk=stale_copy.pk))
    presence.set_share_presence(user=User.objects.get(pk=stale_copy.pk), share=False)

    stale_copy.first_name = "Renamed"
    stale_copy.save()

    stored = User.objects.get(pk=stale_copy.pk)
    assert stored.first_name == "Renamed"
    assert stored.online_status == OnlineStatus.ONLINE
    assert stored.last_seen is not None
    assert stored.share_presence is False


def test_saving_with_explicit_update_fields_is_respected():
    user = UserFactory()
    user.first_name, user.last_name = "Ada", "Lovelace"
    user.save(update_fields=["first_name"])
    user.refresh_from_db()
    assert (user.first_name, user.last_name) != ("Ada", "Lovelace")
    assert user.first_name == "Ada"


def test_the_database_refuses_a_username_that_differs_only_in_case():
    UserFactory(username="Heidi")
    with pytest.raises(IntegrityError), transaction.atomic():
        User.objects.create(username="hEIDI")
    assert list(User.objects.filter(username__iexact="heidi").values_list("username", flat=True)) == ["Heidi"]


def test_renaming_to_a_case_variant_is_a_validation_error_naming_the_username():
    UserFactory(username="Ivan")
    other = UserFactory(username="someone")
    other.username = "IVAN"
    with pytest.raises(ValidationError) as refused:
        other.full_clean()
    assert refused.value.messages == ["A user with that username already exists."]
