"""Accounts made by an admin, and password changes: the rules that every transport meets."""

import logging

from django.contrib.auth import password_validation
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from offchat_backend.log_events import log_event
from users.exceptions import UsernameTakenError
from users.models import User
from users.selectors.accounts import username_taken

logger = logging.getLogger(__name__)


def create_user(
    *,
    created_by: User,
    username: str,
    password: str,
    email: str = "",
    first_name: str = "",
    last_name: str = "",
    is_staff: bool = False,
) -> User:
    """An account an admin adds: offline, with no session, until it logs in.

    Usernames are unique case-insensitively (`Ann` beside `ann` would be two people to the
    eye and one to a careless admin); login stays exact, as Django's backend has it. The
    password must pass AUTH_PASSWORD_VALIDATORS, judged against the new account's names.
    """
    if username_taken(username=username):
        raise UsernameTakenError()
    user = User(username=username, email=email, first_name=first_name, last_name=last_name, is_staff=is_staff)
    validate_new_password(password=password, user=user, field="password")
    user.set_password(password)
    try:
        with transaction.atomic():
            user.save()
    except IntegrityError as taken:  # the same name, added by another request meanwhile
        raise UsernameTakenError() from taken
    log_event(logger, "user_created", outcome="success", user_id=user.pk, by_user_id=created_by.pk, is_staff=is_staff)
    return user


def validate_new_password(*, password: str, user: User, field: str) -> None:
    """Django's password validators, their messages under `field`."""
    try:
        password_validation.validate_password(password, user=user)
    except ValidationError as refused:
        raise ValidationError({field: refused.messages}) from refused
