import uuid
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import AccessToken

from offchat_backend.errors import DomainError
from users.exceptions import (
    SessionNotFoundError,
    SessionRevokedError,
    TokenWithoutSessionError,
    UserInactiveError,
)
from users.models import PresenceSession, ReportedStatus, SessionEndReason, User
from users.selectors.sessions import SESSION_CLAIM, session_of_token
from users.services import auth
from users.tests.factories import UserFactory

NOW = timezone.now().replace(microsecond=0)


def orm_session_of_token(token):
    """session_of_token through the ORM's query, as it was before its SQL was built once:
    the reference the prepared lookup has to match."""
    try:
        session = PresenceSession.objects.select_related("user").get(
            pk=token[SESSION_CLAIM], user_id=token[jwt_settings.USER_ID_CLAIM]
        )
    except KeyError as missing:
        raise TokenWithoutSessionError() from missing
    except (PresenceSession.DoesNotExist, ValidationError, ValueError) as unknown:
        raise SessionNotFoundError() from unknown
    if session.revoked_at is not None:
        raise SessionRevokedError()
    if not session.user.is_active:
        raise UserInactiveError()
    return session


def loaded(instance):
    """Every column's value with its type: SQLite hands back text and integers that only
    the backend's converters turn into datetimes, UUIDs and booleans."""
    return {
        field.attname: (getattr(instance, field.attname), type(getattr(instance, field.attname)))
        for field in instance._meta.concrete_fields
    }


def outcome(load, token):
    try:
        session = load(token)
    except DomainError as refused:
        return type(refused)
    return loaded(session), loaded(session.user)


def signed_in():
    """A user with a session and its access token, every nullable column filled in, so that
    each column's conversion is compared."""
    user = UserFactory(last_login=NOW, last_seen=NOW, last_active=NOW, manual_status=ReportedStatus.AWAY)
    issued = auth.log_in(user=user, user_agent="pytest", ip_address="2001:db8::1")
    PresenceSession.objects.filter(pk=issued.session.pk).update(last_active=NOW, reported_status=ReportedStatus.AWAY)
    return user, issued.session, AccessToken(issued.access)


def live(user, session, token):
    pass


def ended_not_revoked(user, session, token):
    PresenceSession.objects.filter(pk=session.pk).update(ended_at=NOW, end_reason=SessionEndReason.IDLE)


def revoked(user, session, token):
    PresenceSession.objects.filter(pk=session.pk).update(
        ended_at=NOW, end_reason=SessionEndReason.LOGOUT, revoked_at=NOW + timedelta(seconds=1)
    )


def user_inactive(user, session, token):
    User.objects.filter(pk=user.pk).update(is_active=False)


def unknown_sid(user, session, token):
    token[SESSION_CLAIM] = str(uuid.uuid4())


def malformed_sid(user, session, token):
    token[SESSION_CLAIM] = "not-a-uuid"


def numeric_sid(user, session, token):
    token[SESSION_CLAIM] = 42


def null_sid(user, session, token):
    token[SESSION_CLAIM] = None


def missing_sid(user, session, token):
    del token[SESSION_CLAIM]


def missing_user_id(user, session, token):
    del token[jwt_settings.USER_ID_CLAIM]


def malformed_user_id(user, session, token):
    token[jwt_settings.USER_ID_CLAIM] = "not-a-number"


def sid_of_another_user(user, session, token):
    token[SESSION_CLAIM] = str(auth.log_in(user=UserFactory()).session.pk)


STATES = {
    live: None,
    ended_not_revoked: None,
    revoked: SessionRevokedError,
    user_inactive: UserInactiveError,
    unknown_sid: SessionNotFoundError,
    malformed_sid: SessionNotFoundError,
    numeric_sid: SessionNotFoundError,
    null_sid: SessionNotFoundError,
    missing_sid: TokenWithoutSessionError,
    missing_user_id: TokenWithoutSessionError,
    malformed_user_id: SessionNotFoundError,
    sid_of_another_user: SessionNotFoundError,
}


@pytest.mark.django_db
class TestSessionOfToken:
    @pytest.mark.parametrize(("state", "refused_with"), STATES.items(), ids=[state.__name__ for state in STATES])
    def test_loads_what_the_orm_loads_or_refuses_as_it_did(self, state, refused_with):
        user, session, token = signed_in()
        state(user, session, token)
        expected = outcome(orm_session_of_token, token)
        assert outcome(session_of_token, token) == expected
        if refused_with is None:
            assert expected[0]["id"] == (session.pk, uuid.UUID)
        else:
            assert expected is refused_with

    def test_loads_session_and_user_in_one_query_as_saved_instances(self, django_assert_num_queries):
        user, session, token = signed_in()
        with django_assert_num_queries(1):
            loaded_session = session_of_token(token)
            assert loaded_session.user == user
        assert not loaded_session._state.adding and not loaded_session.user._state.adding
        assert loaded_session.get_deferred_fields() == set() == loaded_session.user.get_deferred_fields()
