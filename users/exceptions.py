"""Domain errors. offchat_backend.errors maps each to an HTTP status in one place."""


class DomainError(Exception):
    message = ""

    def __init__(self, message=None):
        super().__init__(message or self.message)
        self.message = message or self.message


class RefreshTokenNotOwnedError(DomainError):
    """A user tried to revoke a refresh token that was issued to somebody else."""

    message = "This refresh token belongs to another user."


class InvalidCursorError(DomainError):
    """A change-feed cursor that this server never handed out."""

    code = "invalid_cursor"


class ResyncRequiredError(DomainError):
    """A change-feed cursor the server can no longer answer for: the client reloads the list."""

    code = "resync_required"
