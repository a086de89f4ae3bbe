"""Login and logout: tokens and presence change together, in one transaction."""

import logging
from dataclasses import dataclass

from django.db import transaction
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.tokens import RefreshToken

from users.exceptions import RefreshTokenNotOwnedError
from users.models import User
from users.services import presence

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IssuedTokens:
    access: str
    refresh: str


def log_in(*, user: User) -> IssuedTokens:
    """Issue a token pair for an authenticated user and mark them online."""
    with transaction.atomic():
        refresh = RefreshToken.for_user(user)
        presence.mark_online(user=user)
    logger.info("event=login user_id=%s outcome=online", user.pk)
    return IssuedTokens(access=str(refresh.access_token), refresh=str(refresh))


def log_out(*, user: User, refresh_token: str) -> None:
    """Blacklist the user's refresh token and mark them offline.

    Raises TokenError for an invalid, expired or already blacklisted token (also when two
    logouts race with one token: only the first blacklists it), and
    RefreshTokenNotOwnedError for another user's token, which must not log that user out.
    """
    token = RefreshToken(refresh_token)
    if str(token.get(jwt_settings.USER_ID_CLAIM)) != str(user.pk):
        raise RefreshTokenNotOwnedError()
    with transaction.atomic():
        _, newly_blacklisted = token.blacklist()
        if not newly_blacklisted:
            raise TokenError("Token is blacklisted")
        presence.mark_offline(user=user)
    logger.info("event=logout user_id=%s outcome=offline", user.pk)
