"""Domain errors. offchat_backend.errors maps each to an HTTP status in one place."""


class RefreshTokenNotOwnedError(Exception):
    """A user tried to revoke a refresh token that was issued to somebody else."""

    message = "This refresh token belongs to another user."
