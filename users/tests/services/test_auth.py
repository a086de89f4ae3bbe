import pytest
from django.core.exceptions import ValidationError
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from users.exceptions import RefreshTokenNotOwnedError, WrongPasswordError
from users.models import OnlineStatus, PresenceSession, User
from users.services import auth
from users.tests.factories import PASSWORD, UserFactory
from users.tests.helpers import race

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "a-new-and-longer-passphrase"


def test_log_in_issues_a_working_pair_and_marks_the_user_online():
    user = UserFactory()
    tokens = auth.log_in(user=user)

    assert AccessToken(tokens.access)["user_id"] == str(user.pk)
    assert OutstandingToken.objects.filter(jti=RefreshToken(tokens.refresh)["jti"], user=user).exists()
    user.refresh_from_db()
    assert user.online_status == OnlineStatus.ONLINE
    assert user.last_seen is not None


def test_log_out_blacklists_the_token_and_marks_the_user_offline():
    user = UserFactory()
    tokens = auth.log_in(user=user)

    auth.log_out(user=user, refresh_token=tokens.refresh)

    assert BlacklistedToken.objects.filter(token__jti=RefreshToken(tokens.refresh, verify=False)["jti"]).exists()
    user.refresh_from_db()
    assert user.online_status == OnlineStatus.OFFLINE
    with pytest.raises(TokenError):
        RefreshToken(tokens.refresh)


def test_a_second_logout_with_the_same_token_is_refused():
    user = UserFactory()
    tokens = auth.log_in(user=user)
    auth.log_out(user=user, refresh_token=tokens.refresh)
    with pytest.raises(TokenError):
        auth.log_out(user=user, refresh_token=tokens.refresh)


def test_log_out_refuses_another_users_token_and_leaves_them_alone():
    owner, intruder = UserFactory(), UserFactory()
    tokens = auth.log_in(user=owner)

    with pytest.raises(RefreshTokenNotOwnedError):
        auth.log_out(user=intruder, refresh_token=tokens.refresh)

    owner.refresh_from_db()
    assert owner.online_status == OnlineStatus.ONLINE
    RefreshToken(tokens.refresh)  # still valid: raises if it was blacklisted


def test_log_out_with_a_forged_token_changes_nothing():
    user = UserFactory()
    auth.log_in(user=user)
    with pytest.raises(TokenError):
        auth.log_out(user=user, refresh_token="not-a-jwt")
    user.refresh_from_db()
    assert user.online_status == OnlineStatus.ONLINE
    assert not BlacklistedToken.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_logouts_racing_with_one_token_revoke_it_once():
    user = UserFactory()
    tokens = auth.log_in(user=user)

    def log_out():
        auth.log_out(user=user, refresh_token=tokens.refresh)
        return "logged out"

    assert race(log_out, expected=TokenError) == ["TokenError", "logged out"]
    assert BlacklistedToken.objects.count() == 1


def test_change_password_keeps_the_session_that_asked_and_ends_every_other():
    user = UserFactory()
    phone, laptop, tablet = (auth.log_in(user=user) for _ in range(3))
    auth.log_out(user=user, refresh_token=tablet.refresh)  # ended already: not counted again

    ended = auth.change_password(session=laptop.session, current_password=PASSWORD, new_password=NEW_PASSWORD)

    assert ended == 1
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    assert user.online_status == OnlineStatus.ONLINE  # the laptop is live
    assert PresenceSession.objects.get(pk=phone.session.pk).revoked_at is not None
    assert PresenceSession.objects.get(pk=laptop.session.pk).revoked_at is None
    blacklisted = set(BlacklistedToken.objects.values_list("token__jti", flat=True))
    jti = {tokens: RefreshToken(tokens.refresh, verify=False)["jti"] for tokens in (phone, laptop, tablet)}
    assert blacklisted == {jti[phone], jti[tablet]}


def test_change_password_with_a_wrong_current_password_writes_nothing():
    user = UserFactory()
    phone, laptop = auth.log_in(user=user), auth.log_in(user=user)

    with pytest.raises(WrongPasswordError):
        auth.change_password(session=laptop.session, current_password="wrong", new_password=NEW_PASSWORD)
    with pytest.raises(ValidationError) as refused:
        auth.change_password(session=laptop.session, current_password=PASSWORD, new_password="short")

    assert list(refused.value.message_dict) == ["new_password"]
    assert User.objects.get(pk=user.pk).check_password(PASSWORD)
    assert PresenceSession.objects.get(pk=phone.session.pk).revoked_at is None
    assert not BlacklistedToken.objects.exists()


def test_an_admins_forced_logout_keeps_no_session():
    user = UserFactory()
    sessions = [auth.log_in(user=user).session for _ in range(2)]
    assert auth.end_every_session(user=user) == 2
    assert not PresenceSession.objects.filter(pk__in=[s.pk for s in sessions], revoked_at__isnull=True).exists()
    assert BlacklistedToken.objects.count() == 2
