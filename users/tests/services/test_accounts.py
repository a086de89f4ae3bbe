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
@pytest.mark.parametrize("spellings", [("frank", "frank"), ("Frank", "frank")])
def test_two_admins_adding_the_same_username_at_once_get_one_account_and_one_refusal(spellings):
    admin = StaffFactory()
    names = iter(spellings)

    def add():
        return accounts.create_user(created_by=admin, username=next(names), password=PASSWORD).username.lower()

    # Both may pass the lookup before either inserts: the second insert's IntegrityError is a
    # refusal too, never a 500, whatever the case of either spelling.
    assert race(add, expected=UsernameTakenError) == ["UsernameTakenError", "frank"]
    assert User.objects.filter(username__iexact="frank").count() == 1


def test_the_lookup_passed_yet_a_case_variant_committed_meanwhile_is_a_refusal(monkeypatch):
    UserFactory(username="Grace")
    admin = StaffFactory()
    # The moment between the service's lookup and its insert, when another admin's insert lands.
    monkeypatch.setattr(accounts, "username_taken", lambda **lookup: False)
    with pytest.raises(UsernameTakenError):
        accounts.create_user(created_by=admin, username="grace", password=PASSWORD)
    monkeypatch.undo()
    assert User.objects.filter(username__iexact="grace").count() == 1
