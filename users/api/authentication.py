from rest_framework_simplejwt.authentication import JWTAuthentication

from users.selectors.sessions import session_of_token


class SessionJWTAuthentication(JWTAuthentication):
    """simplejwt's Bearer authentication, plus per-session revocation: an access token of a
    logged-out session gets 401 at once, not when it expires.

    `request.auth` is the token's presence session (users.models.PresenceSession), which
    the heartbeat and the presence middleware touch. A token without a live session raises
    the domain's 401s (users.exceptions), answered by the exception handler.
    """

    def authenticate(self, request):
        header = self.get_header(request)
        raw_token = None if header is None else self.get_raw_token(header)
        if raw_token is None:
            return None
        session = session_of_token(self.get_validated_token(raw_token))
        return session.user, session
