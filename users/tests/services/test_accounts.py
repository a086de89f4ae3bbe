import pytest
from django.core.exceptions import ValidationError

from users.exceptions import UsernameTakenError
from users.models import OnlineStatus, PresenceSession, User
from users.services import accounts
from users.tests.factories import StaffFactory, UserFactory
from users.tests.helpers import race

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-enough-passphrase"


def test_create_user_makes_an_offline_account_with_a_hashed_password():
    admin = StaffFactory()
    user = accounts.create_user(created_by=admin, username="carol", password=PASSWORD, email="c@example.com")

    stored = User.objects.get(pk=user.pk)
    assert stored.check_password(PASSWORD) and stored.password != PASSWORD
    assert (stored.email, stored.is_staff, stored.is_superuser) == ("c@example.com", False, False)
    assert stored.online_status == OnlineStatus.OFFLINE and stored.last_seen is None
    assert not PresenceSession.objects.filter(user=stored).exists()
    assert accounts.create_user(created_by=admin, username="dave", password=PASSWORD, is_staff=True).is_staff


def test_usernames_are_unique_whatever_their_case():
    UserFactory(username="Carol")
    with pytest.raises(UsernameTakenError):
        accounts.create_user(created_by=StaffFactory(), username="cAROL", password=PASSWORD)
    assert User.objects.filter(username__iexact="carol").count() == 1


@pytest.mark.parametrize("password", ["short", "password123", "erinsmith1", "12345678901"])
def test_a_password_the_validators_refuse_is_named_and_nothing_is_written(password):
    before = User.objects.count()
    with pytest.raises(ValidationError) as refused:
        accounts.create_user(created_by=StaffFactory(), username="erinsmith", password=password)
    assert list(refused.value.message_dict) == ["password"]
    assert User.objects.count() == before + 1  # the StaffFactory's admin only


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_admins_adding_the_same_username_at_once_get_one_account_and_one_refusal():
    admin = StaffFactory()

    def add():
        return accounts.create_user(created_by=admin, username="frank", password=PASSWORD).username

    # Both may pass the lookup before either inserts: the second insert's IntegrityError is a
    # refusal too, never a 500.
    assert race(add, expected=UsernameTakenError) == ["UsernameTakenError", "frank"]
    assert User.objects.filter(username="frank").count() == 1
