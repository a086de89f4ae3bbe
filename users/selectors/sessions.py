"""Which presence session a token opens."""

from django.core.exceptions import ValidationError
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import AccessToken

from users.exceptions import (
    InvalidTokenError,
    SessionNotFoundError,
    SessionRevokedError,
    TokenWithoutSessionError,
    UserInactiveError,
)
from users.models import PresenceSession

# The token claim that names the presence session (users.models.PresenceSession). Refresh
# tokens carry it and pass it on to every access token and rotated refresh token.
SESSION_CLAIM = "sid"


def session_of_token(token) -> PresenceSession:
    """The live-or-idle (not revoked) session a validated token belongs to, with its user,
    in one query.

    Loading the session joined to its user replaces the user lookup simplejwt does anyway,
    so checking revocation costs no extra round trip, not even to a cache.
    """
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


def session_of_access_token(raw_token: str) -> PresenceSession:
    """session_of_token for a raw access token that still has to be verified (a socket's:
    REST requests are verified by simplejwt's authentication class)."""
    try:
        token = AccessToken(raw_token)
    except TokenError as invalid:
        raise InvalidTokenError(str(invalid)) from invalid
    return session_of_token(token)


def unusable_sessions(*, session_ids) -> set[str]:
    """Of these sessions, those no token may use any more: revoked, deleted, or of a
    deactivated user."""
    ids = {str(session_id) for session_id in session_ids}
    usable = PresenceSession.objects.filter(pk__in=ids, revoked_at__isnull=True, user__is_active=True)
    return ids - {str(pk) for pk in usable.values_list("pk", flat=True)}


def ended_sessions(*, session_ids) -> list[PresenceSession]:
    """Of these sessions, those ended (the sweep, a grace period) but not revoked: a socket
    that holds one revives it."""
    ids = {str(session_id) for session_id in session_ids}
    return list(
        PresenceSession.objects.filter(pk__in=ids, ended_at__isnull=False, revoked_at__isnull=True).select_related(
            "user"
        )
    )
