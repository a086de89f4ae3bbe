"""Domain errors: each names its HTTP status and code (offchat_backend.errors.DomainError);
offchat_backend.exception_handler answers them in one place."""

from offchat_backend.errors import DomainError


class RefreshTokenNotOwnedError(DomainError):
    """A user tried to revoke a refresh token that was issued to somebody else."""

    status = 403
    message = "This refresh token belongs to another user."


class InvalidCursorError(DomainError):
    """A change-feed cursor that this server never handed out."""

    code = "invalid_cursor"
    field = "since"


class ResyncRequiredError(DomainError):
    """A change-feed cursor the server can no longer answer for: the client reloads the list."""

    code = "resync_required"
    field = "since"


class NoLiveSessionError(DomainError):
    """An admin tried to set online or away a user with no live session: that status could
    never show (a disconnected user is shown offline), so nothing is written."""

    status = 409
    code = "no_live_session"
    message = "This user has no live session: they can be set online or away only while connected."


# A token that cannot open a session: 401, with simplejwt's body shape ({detail, code}).
class TokenWithoutSessionError(DomainError):
    status = 401
    code = "token_not_valid"
    message = "Token belongs to no session: log in again."


class SessionNotFoundError(DomainError):
    status = 401
    code = "session_not_found"
    message = "Session not found."


class SessionRevokedError(DomainError):
    status = 401
    code = "session_revoked"
    message = "This session has been logged out."


class UserInactiveError(DomainError):
    status = 401
    code = "user_inactive"
    message = "User is inactive"


class InvalidTokenError(DomainError):
    """A token that is malformed, forged or expired (simplejwt's message)."""

    status = 401
    code = "token_not_valid"
    message = "Token is invalid or expired"


class WrongPasswordError(DomainError):
    """The password given to confirm a change is not the account's."""

    code = "wrong_password"
    field = "current_password"
    message = "The current password is wrong."


class UsernameTakenError(DomainError):
    code = "username_taken"
    field = "username"
    message = "A user with that username already exists."
