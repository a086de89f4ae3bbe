"""Every presence write in the project goes through this module.

Writes are conditional UPDATEs inside one transaction, never a read followed by a save of
stale values: concurrent writers (a heartbeat racing the sweep, two devices of one user)
cannot undo each other, and a write that would change nothing does not happen.

Locks are always taken in one order: session rows, then user rows, then the change-feed
counter (users.services.feed) last, so no two writers can deadlock. What counts as present,
away or stale is users.presence_rules; this module only applies it.

Timestamps come from the application clock (`timezone.now()`), never the database's, so
tests can move time with time-machine and every writer agrees on one clock.
"""

import logging
import textwrap
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from django.conf import settings
from django.db import DatabaseError, OperationalError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from offchat_backend.db import ids_in
from offchat_backend.log_events import log_event
from offchat_backend.write_behind import WriteBehind
from users.exceptions import NoLiveSessionError
from users.models import PRESENT_STATUSES, OnlineStatus, PresenceSession, PresenceSweep, SessionEndReason, User
from users.presence_rules import (
    aggregate_status,
    aggregate_status_expression,
    inactivity_timeout,
    loaded_row_shows_the_same,
    shows_the_same_after_activity,
    shows_the_same_after_activity_params,
    shows_the_same_after_activity_sql,
    transition_margin,
    write_granularity,
)
from users.selectors.presence import last_sweep
from users.services import history
from users.services.feed import next_feed_id, prune_tombstones, take_feed_id

logger = logging.getLogger(__name__)


# --- Sessions -------------------------------------------------------------------------
def start_session(*, user: User, user_agent: str = "", ip_address: str | None = None, at=None) -> PresenceSession:
    """A login: a new live session, and the user online."""
    at = at or timezone.now()
    with transaction.atomic():
        session = PresenceSession.objects.create(
            user=user,
            user_agent=user_agent[: PresenceSession._meta.get_field("user_agent").max_length],
            ip_address=ip_address,
            created_at=at,
            last_seen=at,
            last_active=at,
        )
        _recompute_user(user=user, at=at, seen=True, active=True)
    return session


def end_session(*, session: PresenceSession, reason: str, at=None) -> bool:
    """Logout (the user's own device) or a forced end (the user elsewhere, or an admin).

    Revokes the session: its tokens get 401 from now on. The user stays online while
    another session is live. Returns False when it was revoked already.
    """
    at = at or timezone.now()
    with transaction.atomic():
        revoked = PresenceSession.objects.filter(pk=session.pk, revoked_at__isnull=True).update(
            revoked_at=at, ended_at=Coalesce(F("ended_at"), at), end_reason=reason
        )
        if not revoked:
            return False
        # Logout is the user's last act on that device; an admin's forced end is not theirs.
        _recompute_user(user=session.user, at=at, seen=reason == SessionEndReason.LOGOUT, active=False)
    session.revoked_at = session.revoked_at or at
    return True


# --- Activity -------------------------------------------------------------------------
def record_activity(
    *,
    user: User,
    session: PresenceSession,
    active: bool,
    reported_status: str | None = None,
    at=None,
    may_defer: bool = False,
) -> bool:
    """A request on `session`: the connection is alive; `active` when it was real input.

    `reported_status` is what a heartbeat says (online or away); other requests keep what
    the session last said. Coalesced: while the session and user rows loaded with the
    request are younger than PRESENCE_WRITE_GRANULARITY and nothing changes state, nothing
    is written and no query runs. Returns whether anything was written (or queued). A request
    that is not a heartbeat waits a heartbeat interval longer before writing (_write_granularity).

    `may_defer`: the caller answers from `user` and `session` as updated here, not from the
    database, so a write that changes no shown status may land after it answers: within
    PRESENCE_WRITE_BATCH_INTERVAL, in one statement with its process's other such writes
    (_DEFERRED_ACTIVITY). A write that changes a status is never deferred.
    """
    at = at or timezone.now()
    keeps_report = reported_status is None
    reported_status = reported_status or session.reported_status
    if session.ended_at is None and reported_status == session.reported_status:
        if _is_fresh(user=user, session=session, at=at, active=active, heartbeat=not keeps_report):
            return False
        if may_defer and _defer(
            user=user, session=session, active=active, reported_status=reported_status, keeps_report=keeps_report, at=at
        ):
            _apply_to_loaded_rows(user=user, session=session, active=active, at=at)
            return True

    durable = connection.in_atomic_block  # a caller's transaction keeps its own guarantees
    # The common write, when no shown status changes, in one statement and one round trip on
    # PostgreSQL. Not on SQLite (no row locks to take in order, no asynchronous commit, and a
    # statement there is a function call, not a round trip: nothing to save), and not inside
    # a caller's transaction: there it would need a savepoint of its own, as the atomic block
    # below has, so that an error leaves the caller's transaction usable; and no request
    # runs in one (ATOMIC_REQUESTS is off). Anything else takes the transactional path.
    if (
        connection.vendor == "postgresql"
        and not durable
        and _write_the_fast_path_in_one_statement(
            user=user, session=session, active=active, reported_status=reported_status, keeps_report=keeps_report, at=at
        )
    ):
        if timezone.now() - at > transition_margin():
            # As in _write_in_a_transaction, though after the write committed: a poll that read the row meanwhile
            # read it new already, and the id still makes the next poll read it again.
            with transaction.atomic():
                _commit_without_waiting_for_disk()
                take_feed_id(user_ids=[user.pk])
    elif not _write_in_a_transaction(
        user=user,
        session=session,
        active=active,
        reported_status=reported_status,
        keeps_report=keeps_report,
        at=at,
        durable=durable,
    ):
        return False
    if not keeps_report:
        session.reported_status = reported_status
    _apply_to_loaded_rows(user=user, session=session, active=active, at=at)
    return True


def _apply_to_loaded_rows(*, user: User, session: PresenceSession, active: bool, at) -> None:
    session.last_seen, session.ended_at = at, None
    if active:
        session.last_active = user.last_active = at
    user.last_seen = at


def _write_in_a_transaction(
    *, user: User, session: PresenceSession, active: bool, reported_status: str, keeps_report: bool, at, durable: bool
) -> bool:
    """record_activity's write as conditional UPDATEs in one transaction, the slow path
    (_recompute_user) when a shown status changes. False when the session was revoked."""
    with transaction.atomic():
        if not durable:
            _commit_without_waiting_for_disk()
        # A request proves the session alive: it is revived whatever the sweep decided.
        session_fields = {"last_seen": Greatest("last_seen", at), "ended_at": None, "end_reason": ""}
        if active:
            session_fields["last_active"] = Greatest(Coalesce("last_active", at), at)
        live_session = PresenceSession.objects.filter(pk=session.pk, revoked_at__isnull=True)
        if keeps_report:
            # The loaded copy of the report may be stale: it is only ever compared, never written.
            report_changed = False
            if not live_session.update(**session_fields):
                return False  # logged out while this request ran
        else:
            # Whether the report changed is read from the row under its lock, not from the copy
            # loaded with the request, which a concurrent request may have made stale.
            report_changed = not live_session.filter(reported_status=reported_status).update(**session_fields)
            if report_changed and not live_session.update(**session_fields, reported_status=reported_status):
                return False  # logged out while this request ran
        user_fields = {"last_seen": Greatest(Coalesce("last_seen", at), at)}
        if active:
            user_fields["last_active"] = Greatest(Coalesce("last_active", at), at)
        # The fast path's WHERE matches only rows whose shown status this activity cannot
        # change. A session the sweep ended is revived here without the slow path only while
        # the user's other sessions already show what it reports.
        if report_changed or not (
            User.objects.filter(pk=user.pk)
            .filter(shows_the_same_after_activity(reported_status=reported_status, active=active, at=at))
            .update(**user_fields)
        ):
            _recompute_user(user=user, at=at, seen=True, active=active)
        elif timezone.now() - at > transition_margin():
            # Took longer than the change feed allows for; a poll may have read the old row
            # at a moment when it no longer held. A feed id makes pollers read it again.
            take_feed_id(user_ids=[user.pk])
    return True


def _write_the_fast_path_in_one_statement(
    *, user: User, session: PresenceSession, active: bool, reported_status: str, keeps_report: bool, at: datetime
) -> bool:
    """The transactional path's common case, when this activity changes no shown status, as
    one PostgreSQL statement in autocommit: the same rows, the same values, the same locks in
    the same order, committed without waiting for the disk. All or nothing: it writes only
    when both rows match, and returns False having written nothing otherwise (the session
    revoked or its report changed, or a status to change), for the transactional path."""
    params = {
        "session_id": session.pk,
        "user_id": user.pk,
        "at": at,
        "reported_status": reported_status,
        **shows_the_same_after_activity_params(reported_status=reported_status, active=active, at=at),
    }
    with connection.cursor() as cursor:
        cursor.execute(_fast_path_statement(active=active, keeps_report=keeps_report), params)
        return cursor.fetchone()[0]


@cache
def _fast_path_statement(*, active: bool, keeps_report: bool) -> str:
    """Built once per combination of flags: compiling the ORM's UPDATEs on every heartbeat
    cost more than running them.

    The session row is locked first, as the transactional path's UPDATE locks it, then the
    user row is updated, then the session row: each step's EXISTS is a one-time filter that
    runs the step before it, which gives the order (PostgreSQL does not promise an order
    for WITH's sub-statements otherwise). Under READ COMMITTED the lock and the UPDATE
    re-check their WHERE on a row that another transaction committed meanwhile, as the
    transactional path's UPDATEs do. set_config(..., true) is SET LOCAL: it lasts until this
    statement's own transaction ends, and PostgreSQL takes synchronous_commit as it stands
    when a transaction commits (see _commit_without_waiting_for_disk).
    """
    # Sets what the transactional path's session_fields and user_fields set, and its WHERE
    # clauses: a heartbeat's report compared under the lock, a plain request's left alone.
    same_report = "" if keeps_report else 'AND "reported_status" = %(reported_status)s'
    and_last_active = ', "last_active" = GREATEST(COALESCE("last_active", %(at)s), %(at)s)' if active else ""
    return textwrap.dedent(f"""
        WITH locked_session AS MATERIALIZED (
            SELECT "id" FROM "presence_sessions"
            WHERE "id" = %(session_id)s AND "revoked_at" IS NULL {same_report}
            FOR NO KEY UPDATE
        ), touched_user AS (
            UPDATE "users" SET "last_seen" = GREATEST(COALESCE("last_seen", %(at)s), %(at)s){and_last_active}
            WHERE "users"."id" = %(user_id)s
                AND EXISTS (SELECT FROM locked_session)
                AND {shows_the_same_after_activity_sql(active=active)}
            RETURNING "users"."id"
        ), touched_session AS (
            UPDATE "presence_sessions"
            SET "last_seen" = GREATEST("last_seen", %(at)s), "ended_at" = NULL, "end_reason" = ''{and_last_active}
            WHERE "id" = %(session_id)s AND EXISTS (SELECT FROM touched_user)
            RETURNING "id"
        )
        SELECT EXISTS (SELECT FROM touched_session), set_config('synchronous_commit', 'off', true)
    """).strip()


# --- Deferred activity -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _DeferredActivity:
    session_id: str
    user_id: int
    at: datetime
    active: bool
    reported_status: str
    keeps_report: bool

    @property
    def kind(self) -> tuple[str, bool, bool]:
        """Activities of one kind share one statement (_fast_path_for_many_statement)."""
        return self.reported_status, self.active, self.keeps_report


def _defer(
    *, user: User, session: PresenceSession, active: bool, reported_status: str, keeps_report: bool, at: datetime
) -> bool:
    """Queues the write when the rows loaded with the request say it is the fast path's
    (no shown status to change, now or within the transition margin); the flush checks that
    again under the rows' locks. PostgreSQL only and outside a caller's transaction, as the
    fast path; never once the process is exiting."""
    interval = settings.PRESENCE_WRITE_BATCH_INTERVAL
    if not interval or connection.vendor != "postgresql" or connection.in_atomic_block:
        return False
    if user.last_seen is None or not loaded_row_shows_the_same(user=user, session=session, at=at, active=active):
        return False
    entry = _DeferredActivity(
        session_id=str(session.pk),
        user_id=user.pk,
        at=at,
        active=active,
        reported_status=reported_status,
        keeps_report=keeps_report,
    )
    return _DEFERRED_ACTIVITY.add((entry.session_id, entry.kind), entry, interval=interval)


def write_deferred_activity() -> int:
    """Writes this process's deferred activity now, in the calling thread (tests, and the
    exit of a process that wants it written before it stops); returns how many entries."""
    return _DEFERRED_ACTIVITY.flush()


def _write_deferred(entries: list[_DeferredActivity]) -> None:
    """The flush: every kind of activity in one statement for all its sessions, with the fast
    path's rows, values, checks and lock order. An entry that statement leaves alone (a status
    to change by now, its session revoked or its report changed) takes the transactional path
    on its own, as record_activity would have."""
    by_kind = defaultdict(list)
    for entry in entries:
        by_kind[entry.kind].append(entry)
    written, left = [], []
    for (reported_status, active, keeps_report), group in by_kind.items():
        touched = _write_the_fast_path_for_many(
            entries=group, reported_status=reported_status, active=active, keeps_report=keeps_report
        )
        for entry in group:
            (written if entry.session_id in touched else left).append(entry)
    landed_at = timezone.now()
    late = {entry.user_id for entry in written if landed_at - entry.at > transition_margin()}
    if late:
        # As record_activity does for a write that committed past the margin.
        with transaction.atomic():
            _commit_without_waiting_for_disk()
            take_feed_id(user_ids=sorted(late))
    for entry in left:
        try:
            _write_deferred_on_its_own(entry)
        except DatabaseError:
            logger.exception("event=activity_write_failed user_id=%s", entry.user_id)


def _write_deferred_on_its_own(entry: _DeferredActivity) -> None:
    session = PresenceSession.objects.select_related("user").filter(pk=entry.session_id).first()
    if session is None:
        return  # the account was deleted meanwhile
    _write_in_a_transaction(
        user=session.user,
        session=session,
        active=entry.active,
        reported_status=entry.reported_status,
        keeps_report=entry.keeps_report,
        at=entry.at,
        durable=False,
    )


def _write_the_fast_path_for_many(
    *, entries: list[_DeferredActivity], reported_status: str, active: bool, keeps_report: bool
) -> set[str]:
    """The ids of the sessions written. The rows are judged at this moment, which is at or
    after every entry's own: a row that shows the same then showed the same at each entry's
    time (the limits only get nearer as the clock moves)."""
    params = {
        "session_ids": [entry.session_id for entry in entries],
        "ats": [entry.at for entry in entries],
        "reported_status": reported_status,
        **shows_the_same_after_activity_params(reported_status=reported_status, active=active, at=timezone.now()),
    }
    with connection.cursor() as cursor:
        cursor.execute(_fast_path_for_many_statement(active=active, keeps_report=keeps_report), params)
        return set(cursor.fetchone()[0])


@cache
def _fast_path_for_many_statement(*, active: bool, keeps_report: bool) -> str:
    """_fast_path_statement for many sessions, each with its own timestamp. The locks are
    taken in the same order, session rows then user rows, and within each kind in id order,
    so that two processes' flushes (a session's requests reach any worker) and a user's
    devices on two workers cannot deadlock: each locking SELECT sorts before it locks."""
    same_report = "" if keeps_report else 'AND "presence_sessions"."reported_status" = %(reported_status)s'
    # Unqualified columns are the updated table's: the CTEs read beside it have no such column.
    user_active = ', "last_active" = GREATEST(COALESCE("last_active", latest.at), latest.at)'
    session_active = ', "last_active" = GREATEST(COALESCE("last_active", locked_sessions.at), locked_sessions.at)'
    return textwrap.dedent(f"""
        WITH activity AS (
            SELECT * FROM unnest(%(session_ids)s::uuid[], %(ats)s::timestamptz[]) AS activity(session_id, at)
        ), locked_sessions AS MATERIALIZED (
            SELECT "presence_sessions"."id", "presence_sessions"."user_id", activity.at
            FROM "presence_sessions" JOIN activity ON "presence_sessions"."id" = activity.session_id
            WHERE "presence_sessions"."revoked_at" IS NULL {same_report}
            ORDER BY "presence_sessions"."id"
            FOR NO KEY UPDATE OF "presence_sessions"
        ), locked_users AS MATERIALIZED (
            SELECT "users"."id" FROM "users"
            WHERE "users"."id" IN (SELECT "user_id" FROM locked_sessions)
                AND {shows_the_same_after_activity_sql(active=active)}
            ORDER BY "users"."id"
            FOR NO KEY UPDATE
        ), latest AS (
            SELECT "user_id", max(at) AS at FROM locked_sessions GROUP BY "user_id"
        ), touched_users AS (
            UPDATE "users" SET "last_seen" = GREATEST(COALESCE("users"."last_seen", latest.at), latest.at)
                {user_active if active else ""}
            FROM latest
            WHERE "users"."id" = latest."user_id" AND "users"."id" IN (SELECT "id" FROM locked_users)
            RETURNING "users"."id"
        ), touched_sessions AS (
            UPDATE "presence_sessions"
            SET "last_seen" = GREATEST("presence_sessions"."last_seen", locked_sessions.at),
                "ended_at" = NULL, "end_reason" = '' {session_active if active else ""}
            FROM locked_sessions
            WHERE "presence_sessions"."id" = locked_sessions."id"
                AND locked_sessions."user_id" IN (SELECT "id" FROM touched_users)
            RETURNING "presence_sessions"."id"
        )
        SELECT ARRAY(SELECT "id"::text FROM touched_sessions), set_config('synchronous_commit', 'off', true)
    """).strip()


def _later(earlier: _DeferredActivity, later: _DeferredActivity) -> _DeferredActivity:
    return max(earlier, later, key=lambda entry: entry.at)


# One per process: a gunicorn worker's requests queue here and its thread writes them.
_DEFERRED_ACTIVITY = WriteBehind(name="presence activity", write=_write_deferred, merge=_later)


def _commit_without_waiting_for_disk() -> None:
    """PostgreSQL may acknowledge this transaction before its WAL reaches disk.

    Only for activity: a crash can lose the last fraction of a second of heartbeats, which the
    next heartbeat writes again, and PostgreSQL never reorders or half-applies what it keeps.
    The commit then costs no disk flush, the dominant cost of a small write.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def _is_fresh(*, user: User, session: PresenceSession, at: datetime, active: bool, heartbeat: bool) -> bool:
    fresh_since = at - write_granularity(heartbeat=heartbeat)
    stamps = [session.last_seen, user.last_seen]
    if active:
        stamps += [session.last_active, user.last_active]
    if any(stamp is None or stamp <= fresh_since for stamp in stamps):
        return False
    # Fresh, and far enough from every limit that skipping the write changes nothing shown.
    return loaded_row_shows_the_same(user=user, session=session, at=at, active=active)


# --- Sockets ---------------------------------------------------------------------------
def touch_sessions(*, session_ids, at=None) -> int:
    """The sessions of a process's open sockets are alive: one statement for all of them
    (and their users' last_seen), however many sockets; sockets' pings write nothing else.

    A session the sweep ended meanwhile (a process that stalled past the timeout) is
    revived as connect_session does, one by one: the rare path. Revoked sessions stay ended.
    Returns how many sessions were touched.
    """
    at = at or timezone.now()
    ids = [str(session_id) for session_id in session_ids]
    if not ids:
        return 0
    live = PresenceSession.objects.filter(pk__in=ids, ended_at__isnull=True, revoked_at__isnull=True)
    with transaction.atomic():
        _commit_without_waiting_for_disk()
        moved = live.update(last_seen=Greatest("last_seen", at))
        # Seen, not active: last_active moves with real input only (a status frame, a request).
        User.objects.filter(pk__in=live.values("user_id")).update(last_seen=Greatest(Coalesce("last_seen", at), at))
    if moved < len(ids):
        ended = PresenceSession.objects.filter(pk__in=ids, ended_at__isnull=False, revoked_at__isnull=True)
        for session in ended.select_related("user"):
            connect_session(session=session, at=at)
            moved += 1
    return moved


def connect_session(*, session: PresenceSession, at=None) -> None:
    """A socket opened on `session`: it is alive now, whatever the write granularity says
    (end_closed_session compares with this time), and revived if the sweep or a closed
    socket's grace period ended it. A socket that reconnects to a live session changes no
    status and takes no feed id (a restart's reconnect storm must not flood the feed)."""
    at = at or timezone.now()
    with transaction.atomic():
        not_revoked = PresenceSession.objects.filter(pk=session.pk, revoked_at__isnull=True)
        revived = not_revoked.filter(ended_at__isnull=False).update(
            last_seen=Greatest("last_seen", at), ended_at=None, end_reason=""
        )
        if revived:
            _recompute_user(user=session.user, at=at, seen=True, active=False)
        elif not_revoked.update(last_seen=Greatest("last_seen", at)) and not (
            User.objects.filter(pk=session.user_id)
            .filter(shows_the_same_after_activity(reported_status=session.reported_status, active=False, at=at))
            .update(last_seen=Greatest(Coalesce("last_seen", at), at))
        ):
            _recompute_user(user=session.user, at=at, seen=True, active=False)
    session.last_seen, session.ended_at = at, None


def end_closed_session(*, session: PresenceSession, closed_at) -> bool:
    """The last socket of `session` closed at `closed_at` and none came back within the
    grace period: the session ends, unless something touched it since (a socket reopened on
    another process, an HTTP request). Not revoked: the device's next request revives it.
    The user stays online while another session is live."""
    with transaction.atomic():
        ended = PresenceSession.objects.filter(
            pk=session.pk, ended_at__isnull=True, revoked_at__isnull=True, last_seen__lte=closed_at
        ).update(ended_at=closed_at, end_reason=SessionEndReason.CLOSED)
        if ended:
            _recompute_user(user=session.user, at=closed_at, seen=False, active=False)
    return bool(ended)


# --- Statuses set by people -----------------------------------------------------------
def set_manual_status(*, user: User, status: str | None) -> bool:
    """The user's own away or online, shown while connected until cleared (None)."""
    with transaction.atomic():
        # exclude(manual_status=None) is "IS NOT NULL": clearing an empty status writes nothing.
        changed = User.objects.filter(pk=user.pk).exclude(manual_status=status).update(manual_status=status)
        if changed:
            history.record_shown_statuses(users=[User.objects.select_for_update().get(pk=user.pk)], at=timezone.now())
            take_feed_id(user_ids=[user.pk])
    user.manual_status = status
    return bool(changed)


def set_share_presence(*, user: User, share: bool) -> bool:
    with transaction.atomic():
        changed = User.objects.filter(pk=user.pk).exclude(share_presence=share).update(share_presence=share)
        if changed:
            take_feed_id(user_ids=[user.pk])
    user.share_presence = share
    return bool(changed)


def admin_set_status(*, user: User, status: str, at=None) -> None:
    """An admin's decision. Offline ends the user's live sessions (not revoked: the user's
    next request brings them back, as after a sweep); online or away sets the stored status,
    which holds until the user's own sessions next report a change. Online or away for a
    user with no live session raises NoLiveSessionError and writes nothing: it could not
    show (a disconnected user is offline)."""
    at = at or timezone.now()
    with transaction.atomic():
        live_sessions = PresenceSession.objects.filter(user=user, ended_at__isnull=True)
        if status == OnlineStatus.OFFLINE:
            live_sessions.update(ended_at=at, end_reason=SessionEndReason.ADMIN)
        elif not live_sessions.exists():
            raise NoLiveSessionError
        User.objects.filter(pk=user.pk).update(online_status=status)
        history.record_shown_statuses(users=[User.objects.select_for_update().get(pk=user.pk)], at=at)
        take_feed_id(user_ids=[user.pk])
    user.online_status = status


# --- The sweep ------------------------------------------------------------------------
def mark_inactive_users_offline(*, now=None) -> int:
    """End sessions idle past PRESENCE_INACTIVITY_TIMEOUT; users with none left go offline.

    An idle-ended session is not revoked: its tokens stay valid and its next request
    revives it. Sessions are ended by one UPDATE and users locked with SELECT ... FOR UPDATE;
    both re-check the WHERE on PostgreSQL on a row that a heartbeat committed meanwhile, so an
    active user never ends offline. Sessions and users are written through the cutoff, not
    through lists of their ids; only the history's intervals are closed by id (an index probe
    each, a plan no statistics can turn into a scan of every user). Users present with no
    last_seen at all (set by an admin) count as inactive.
    One sweep at a time: a sweep that finds another running (two beats by mistake, or a
    sweep still running when the next is due) skips, and the running one does the work.
    Bounded: on PostgreSQL a statement that runs, or waits for a lock, longer than
    PRESENCE_SWEEP_TIME_LIMIT is cancelled, the whole sweep rolls back and the next one does
    the work (Celery's time limits cannot interrupt a wait inside the database driver).
    Returns how many users went offline.
    """
    try:
        return _sweep(now=now or timezone.now())
    except OperationalError as failure:
        if getattr(failure.__cause__, "pgcode", None) != QUERY_CANCELED:
            raise
        log_event(logger, "presence_sweep_timed_out", level=logging.WARNING, limit_s=settings.PRESENCE_SWEEP_TIME_LIMIT)
        return 0


QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE for a statement_timeout


def _sweep(*, now) -> int:
    cutoff = now - inactivity_timeout()
    started = time.perf_counter()
    PresenceSweep.objects.get_or_create(pk=1)  # made by a migration; a test database flush removes it
    with transaction.atomic():
        _bound_each_statement(seconds=settings.PRESENCE_SWEEP_TIME_LIMIT)
        if not _lock_the_sweep():
            log_event(logger, "presence_sweep_skipped", reason="another sweep is running")
            return 0
        # The idle sessions end in the statement that finds them (PostgreSQL re-checks the WHERE
        # on a row a heartbeat committed meanwhile); their users come back, not their ids go out.
        idle_users = _end_idle_sessions(cutoff=cutoff, now=now)
        # Stale users are locked, then written through the same filter, never through a list of
        # their ids: a list of 10,000 parameters cost more to build and plan than the writes.
        stale_users = User.objects.filter(online_status__in=PRESENT_STATUSES).filter(
            Q(last_seen__lt=cutoff) | Q(last_seen__isnull=True)
        )
        stale = set(stale_users.select_for_update().values_list("pk", flat=True))
        regrouped = _users_whose_sessions_report_otherwise(user_ids=set(idle_users) - stale)
        # History first: the feed counter stays the last lock taken.
        history.close_for_inactivity(user_ids=stale)
        if regrouped:
            after = User.objects.filter(ids_in("pk", regrouped)).annotate(reported=aggregate_status_expression())
            users = [_with_status(user, user.reported) for user in after]
            history.record_shown_statuses(users=users, at=now)
        history.record_clock_transitions(now=now, since=last_sweep().finished_at)
        if stale or regrouped:
            # Every row below is locked already (so the filter finds the same rows, and the
            # counter is still the last lock taken); status and feed id go in one UPDATE: one
            # new row version per user, not two.
            update_id = next_feed_id()
            if stale:
                stale_users.update(online_status=OnlineStatus.OFFLINE, presence_update_id=update_id)
            if regrouped:
                User.objects.filter(ids_in("pk", regrouped)).update(
                    online_status=aggregate_status_expression(), presence_update_id=update_id
                )
        prune_tombstones(older_than=now - timedelta(seconds=settings.PRESENCE_FEED_MAX_AGE))
        duration = time.perf_counter() - started
        _record_sweep(
            finished_at=now, duration=duration, users_marked_offline=len(stale), sessions_ended=len(idle_users)
        )
    log_event(
        logger,
        "presence_sweep",
        users_marked_offline=len(stale),
        sessions_ended=len(idle_users),
        duration_ms=round(duration * 1000, 1),
    )
    return len(stale)


def _end_idle_sessions(*, cutoff: datetime, now: datetime) -> list[int]:
    """End the live sessions last seen before `cutoff`, in one statement; the user of each
    (a user once per session ended). UPDATE ... RETURNING, which the ORM's update() lacks."""
    table = connection.ops.quote_name(PresenceSession._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET ended_at = %s, end_reason = %s"
            " WHERE ended_at IS NULL AND last_seen < %s RETURNING user_id",
            [
                connection.ops.adapt_datetimefield_value(now),
                SessionEndReason.IDLE,
                connection.ops.adapt_datetimefield_value(cutoff),
            ],
        )
        return [user_id for (user_id,) in cursor.fetchall()]


def _with_status(user: User, status: str) -> User:
    user.online_status = status
    return user


def _bound_each_statement(*, seconds: int) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [f"{seconds}s"])


def _users_whose_sessions_report_otherwise(*, user_ids: set[int]) -> list[int]:
    """Of users who lost a session but keep another, those whose remaining sessions report
    another status than the stored one. Two statements whatever their number: lock the rows
    (reading the stored status), then read those users' live sessions through the partial
    index of live sessions, and compare with the rule's Python form. (The rule's SQL form in
    a WHERE let PostgreSQL hash every live session of every user to check a thousand.)"""
    if not user_ids:
        return []
    locked = User.objects.select_for_update().filter(ids_in("pk", user_ids)).order_by("pk")
    stored = dict(locked.values_list("pk", "online_status"))
    reports: dict[int, list[str]] = {}
    live = PresenceSession.objects.filter(ids_in("user_id", stored), ended_at__isnull=True).order_by()
    for user_id, reported_status in live.values_list("user_id", "reported_status"):
        reports.setdefault(user_id, []).append(reported_status)
    return [user_id for user_id, status in stored.items() if aggregate_status(reports.get(user_id, ())) != status]


def _lock_the_sweep() -> bool:
    """Lock the sweep record for this transaction, or say that another sweep holds it.

    A row lock, not an advisory lock: released by any end of the transaction, including the
    connection dying with a killed worker. SQLite ignores FOR UPDATE, but its write
    transactions already run one at a time.
    """
    return PresenceSweep.objects.select_for_update(skip_locked=True).filter(pk=1).exists()


def _record_sweep(*, finished_at, duration: float, users_marked_offline: int, sessions_ended: int) -> None:
    fields = {
        "finished_at": finished_at,
        "duration_seconds": duration,
        "users_marked_offline": users_marked_offline,
        "sessions_ended": sessions_ended,
    }
    PresenceSweep.objects.filter(pk=1).update(
        **fields,
        sweeps_total=F("sweeps_total") + 1,
        users_marked_offline_total=F("users_marked_offline_total") + users_marked_offline,
    )


# --- Internals ------------------------------------------------------------------------
def _recompute_user(*, user: User, at: datetime, seen: bool, active: bool) -> None:
    """The slow path: lock the user's row, derive the stored status from the live sessions,
    move the timestamps (never backwards), and take a feed id."""
    locked = User.objects.select_for_update().get(pk=user.pk)
    fields = {}
    if seen:
        fields["last_seen"] = max(filter(None, [locked.last_seen, at]))
    if active:
        fields["last_active"] = max(filter(None, [locked.last_active, at]))
    status = _aggregate_status(user_id=user.pk)
    User.objects.filter(pk=user.pk).update(**fields, online_status=status)
    if locked.last_seen and locked.last_seen + inactivity_timeout() < at:
        # Shown offline since their connection timed out, though no sweep ran to say so.
        history.close_timed_out(user_id=user.pk, at=locked.last_seen + inactivity_timeout())
    for name, value in {**fields, "online_status": status}.items():
        setattr(locked, name, value)
    history.record_shown_statuses(users=[locked], at=at)
    update_id = take_feed_id(user_ids=[user.pk])
    for name, value in fields.items():
        setattr(user, name, value)
    user.online_status, user.presence_update_id = status, update_id


def _aggregate_status(*, user_id: int) -> str:
    return aggregate_status(
        PresenceSession.objects.filter(user_id=user_id, ended_at__isnull=True).values_list("reported_status", flat=True)
    )
