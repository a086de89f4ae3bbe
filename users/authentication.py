from django.core.exceptions import ValidationError
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken
from rest_framework_simplejwt.settings import api_settings as jwt_settings

from users.models import PresenceSession

# The token claim that names the presence session (users.models.PresenceSession). Refresh
# tokens carry it and pass it on to every access token and rotated refresh token.
SESSION_CLAIM = "sid"


def session_of_token(token) -> PresenceSession:
    """The live-or-idle (not revoked) session a token belongs to, with its user, in one query.

    Loading the session joined to its user replaces the user lookup simplejwt does anyway,
    so checking revocation costs no extra round trip, not even to a cache.
    """
    try:
        session = PresenceSession.objects.select_related("user").get(
            pk=token[SESSION_CLAIM], user_id=token[jwt_settings.USER_ID_CLAIM]
        )
    except KeyError as missing:
        raise InvalidToken("Token belongs to no session: log in again.") from missing
    except (PresenceSession.DoesNotExist, ValidationError, ValueError) as unknown:
        raise AuthenticationFailed("Session not found.", code="session_not_found") from unknown
    if session.revoked_at is not None:
        raise AuthenticationFailed("This session has been logged out.", code="session_revoked")
    if not session.user.is_active:
        raise AuthenticationFailed("User is inactive", code="user_inactive")
    return session


class SessionJWTAuthentication(JWTAuthentication):
    """simplejwt's Bearer authentication, plus per-session revocation: an access token of a
    logged-out session gets 401 at once, not when it expires."""

    def get_user(self, validated_token):
        session = session_of_token(validated_token)
        user = session.user
        # The presence middleware and the heartbeat touch this session.
        user.presence_session = session
        return user
