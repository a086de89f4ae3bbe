"""Login and logout: tokens, sessions and presence change together, in one transaction."""

import logging
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import RefreshToken

from offchat_backend.log_events import log_event
from users.exceptions import RefreshTokenNotOwnedError, WrongPasswordError
from users.models import PresenceSession, SessionEndReason, User
from users.selectors.sessions import SESSION_CLAIM, session_of_token
from users.services import accounts, presence

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IssuedTokens:
    access: str
    refresh: str
    session: PresenceSession


def log_in(*, user: User, user_agent: str = "", ip_address: str | None = None) -> IssuedTokens:
    """Start a presence session for an authenticated user and issue tokens that carry it."""
    with transaction.atomic():
        session = presence.start_session(user=user, user_agent=user_agent, ip_address=ip_address)
        refresh = RefreshToken.for_user(user)
        refresh[SESSION_CLAIM] = str(session.pk)
        # simplejwt recorded the token before it carried the session: record what was issued,
        # so that a logout can find the session's refresh tokens by their claim.
        OutstandingToken.objects.filter(jti=refresh[jwt_settings.JTI_CLAIM]).update(token=str(refresh))
    log_event(logger, "login", outcome="success", user_id=user.pk, session_id=session.pk)
    return IssuedTokens(access=str(refresh.access_token), refresh=str(refresh), session=session)


def log_out(*, user: User, refresh_token: str) -> None:
    """Blacklist the refresh token and revoke its session; other sessions stay.

    Raises TokenError for an invalid, expired or already blacklisted token (also when two
    logouts race with one token: only the first blacklists it), the session errors of
    session_of_token for one of a revoked session, and RefreshTokenNotOwnedError for
    another user's token, which must not log that user out.
    """
    token = RefreshToken(refresh_token)
    if str(token.get(jwt_settings.USER_ID_CLAIM)) != str(user.pk):
        raise RefreshTokenNotOwnedError()
    session = session_of_token(token)
    with transaction.atomic():
        _, newly_blacklisted = token.blacklist()
        if not newly_blacklisted:
            raise TokenError("Token is blacklisted")
        presence.end_session(session=session, reason=SessionEndReason.LOGOUT)
    _log_logout(session=session)


def log_out_session(*, session: PresenceSession) -> None:
    """Logout without a refresh token (the OffChat frontend's): the session whose token made
    the request ends, and each of its refresh tokens is blacklisted."""
    with transaction.atomic():
        presence.end_session(session=session, reason=SessionEndReason.LOGOUT)
        _blacklist_refresh_tokens(user_id=session.user_id, session_id=session.pk)
    _log_logout(session=session)


def _log_logout(*, session: PresenceSession) -> None:
    log_event(
        logger,
        "logout",
        outcome="success",
        user_id=session.user_id,
        session_id=session.pk,
        status_after=session.user.online_status,
    )


def end_every_session(*, user: User, keep: PresenceSession | None = None) -> int:
    """Sign a user out of every device but `keep` (an admin's forced logout keeps none): every
    other session not yet revoked is, and every other refresh token of the user is
    blacklisted. Returns how many ended."""
    with transaction.atomic():
        sessions = PresenceSession.objects.filter(user=user, revoked_at__isnull=True).select_related("user")
        if keep is not None:
            sessions = sessions.exclude(pk=keep.pk)
        ended = [
            session.pk for session in sessions if presence.end_session(session=session, reason=SessionEndReason.FORCED)
        ]
        _blacklist_refresh_tokens(user_id=user.pk, except_session_id=keep.pk if keep is not None else None)
    log_event(logger, "sessions_ended", outcome="success", user_id=user.pk, sessions_ended=len(ended))
    return len(ended)


def change_password(*, session: PresenceSession, current_password: str, new_password: str) -> int:
    """The user of `session` changes their password: `current_password` must be theirs, the
    new one must pass AUTH_PASSWORD_VALIDATORS. Every other session ends, as a stolen one
    must, and its refresh tokens are blacklisted; `session` stays signed in. Nothing is
    written when a check fails. Returns how many sessions ended."""
    user = session.user
    if not user.check_password(current_password):
        raise WrongPasswordError()
    accounts.validate_new_password(password=new_password, user=user, field="new_password")
    with transaction.atomic():
        user.set_password(new_password)
        user.save(update_fields=["password"])
        ended = end_every_session(user=user, keep=session)
    log_event(logger, "password_changed", outcome="success", user_id=user.pk, session_id=session.pk)
    return ended


def _blacklist_refresh_tokens(*, user_id: int, session_id=None, except_session_id=None) -> None:
    """simplejwt's blacklist for every unexpired refresh token of the user: of one session
    only, or of all but one, read from the `sid` claim, when `session_id` or
    `except_session_id` is given. Revoking the session already refuses them; the blacklist
    says so to anything that reads simplejwt's tables."""
    outstanding = OutstandingToken.objects.filter(
        user_id=user_id, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True
    )
    if session_id is not None or except_session_id is not None:
        outstanding = [token for token in outstanding if _in_scope(token, session_id, except_session_id)]
    BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token=token) for token in outstanding], ignore_conflicts=True
    )


def _in_scope(token: OutstandingToken, session_id, except_session_id) -> bool:
    sid = RefreshToken(token.token, verify=False).get(SESSION_CLAIM)
    if session_id is not None:
        return sid == str(session_id)
    return sid != str(except_session_id)


def end_session(*, session: PresenceSession) -> bool:
    """A forced logout, by the session's user from another device or by an admin."""
    ended = presence.end_session(session=session, reason=SessionEndReason.FORCED)
    if ended:
        log_event(logger, "session_ended", outcome="success", user_id=session.user_id, session_id=session.pk)
    return ended
