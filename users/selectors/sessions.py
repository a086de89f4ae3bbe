"""Which presence session a token opens."""

from functools import cache

from django.core.exceptions import ValidationError
from django.db import connections, router
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
from users.models import PresenceSession, User

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
        session_id, user_id = token[SESSION_CLAIM], token[jwt_settings.USER_ID_CLAIM]
    except KeyError as missing:
        raise TokenWithoutSessionError() from missing
    try:
        session = _session_with_user(session_id=session_id, user_id=user_id)
    except (PresenceSession.DoesNotExist, ValidationError, ValueError, TypeError) as unknown:
        raise SessionNotFoundError() from unknown
    if session.revoked_at is not None:
        raise SessionRevokedError()
    if not session.user.is_active:
        raise UserInactiveError()
    return session


def _session_with_user(*, session_id, user_id) -> PresenceSession:
    """`PresenceSession.objects.select_related("user").get(pk=session_id, user_id=user_id)`,
    without compiling that query on every call: this runs on every authenticated request,
    where compiling the join and its select_related cost more than the round trip (our
    authentication ran at 0.55-0.8x of stock simplejwt's user lookup; with the SQL built
    once, it is cheaper than that lookup, which compiles its own query every time).

    Raises what the ORM raises: DoesNotExist, and ValidationError, ValueError or TypeError
    for an id that is no UUID or no number.
    """
    alias = router.db_for_read(PresenceSession)
    connection = connections[alias]
    lookup = _session_with_user_lookup(alias=alias)
    params = (
        lookup.session_pk.get_db_prep_value(session_id, connection),
        lookup.user_fk.get_db_prep_value(user_id, connection),
    )
    with connection.cursor() as cursor:
        cursor.execute(lookup.sql, params)
        row = cursor.fetchone()
    if row is None:
        raise PresenceSession.DoesNotExist("PresenceSession matching query does not exist.")
    values = list(row)
    for index, column, converters in lookup.converters:
        for converter in converters:
            values[index] = converter(values[index], column, connection)
    split = len(lookup.session_attnames)
    session = PresenceSession.from_db(alias, lookup.session_attnames, values[:split])
    lookup.user_fk.set_cached_value(session, User.from_db(alias, lookup.user_attnames, values[split:]))
    return session


class _SessionWithUserLookup:
    """The SQL the ORM generates for _session_with_user's query, and what the ORM does to
    its row, built from the models' metadata so that a new column is read too. Quoting and
    converters come from the database's backend: the same statement runs on PostgreSQL and
    SQLite (where datetimes, UUIDs and booleans come back as text or integers)."""

    def __init__(self, *, connection):
        self.session_pk = PresenceSession._meta.pk
        self.user_fk = PresenceSession._meta.get_field("user")
        session_table, user_table = PresenceSession._meta.db_table, User._meta.db_table
        columns = [field.get_col(session_table) for field in PresenceSession._meta.concrete_fields]
        columns += [field.get_col(user_table) for field in User._meta.concrete_fields]
        self.session_attnames = [field.attname for field in PresenceSession._meta.concrete_fields]
        self.user_attnames = [field.attname for field in User._meta.concrete_fields]

        def qualified(table, column):
            return f"{connection.ops.quote_name(table)}.{connection.ops.quote_name(column)}"

        session_id_column = qualified(session_table, self.session_pk.column)
        user_id_column = qualified(session_table, self.user_fk.column)
        self.sql = (
            f"SELECT {', '.join(qualified(column.alias, column.target.column) for column in columns)}"
            f" FROM {connection.ops.quote_name(session_table)}"
            f" INNER JOIN {connection.ops.quote_name(user_table)}"
            f" ON {user_id_column} = {qualified(user_table, self.user_fk.target_field.column)}"
            f" WHERE {session_id_column} = %s AND {user_id_column} = %s"
        )
        # As SQLCompiler.get_converters pairs them: the backend's, then the field's.
        self.converters = [
            (index, column, converters)
            for index, column in enumerate(columns)
            if (converters := connection.ops.get_db_converters(column) + column.get_db_converters(connection))
        ]


@cache
def _session_with_user_lookup(*, alias: str) -> _SessionWithUserLookup:
    """Built once per database alias: what it holds depends on the alias's backend and
    settings only, not on the thread's connection it was built with."""
    return _SessionWithUserLookup(connection=connections[alias])


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
