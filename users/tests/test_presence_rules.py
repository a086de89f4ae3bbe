"""The presence rules (users.presence_rules): each in its Python form, for a loaded row, and
its SQL form, for a query, and the two agreeing."""

import itertools
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.utils import timezone

from users.models import OnlineStatus, PresenceSession, ReportedStatus, User
from users.presence_rules import (
    aggregate_status,
    aggregate_status_expression,
    crossed_a_limit,
    crossed_a_limit_q,
    effective_status,
    loaded_row_shows_the_same,
    shows_the_same_after_activity,
    shows_the_same_after_activity_params,
    shows_the_same_after_activity_sql,
    status_q,
    status_rank,
    status_rank_expression,
)
from users.tests.factories import UserFactory
from users.tests.helpers import users_in_every_state

NOW = timezone.now().replace(microsecond=0)
TIMEOUT = timedelta(seconds=120)
AWAY_AFTER = timedelta(seconds=300)


@pytest.mark.django_db
def test_the_python_and_sql_forms_of_the_rule_agree_on_every_case():
    ages = [None, timedelta(0), TIMEOUT - timedelta(seconds=1), TIMEOUT, AWAY_AFTER, AWAY_AFTER + timedelta(hours=1)]
    users = users_in_every_state(now=NOW, ages=ages, manual_statuses=[None, *ReportedStatus.values])
    by_sql = {
        status: set(User.objects.filter(status_q(status, now=NOW)).values_list("pk", flat=True))
        for status in OnlineStatus.values
    }
    for user in users:
        python_says = effective_status(user=user, now=NOW)
        sql_says = [status for status, ids in by_sql.items() if user.pk in ids]
        assert sql_says == [python_says], (user.online_status, user.last_seen, user.last_active, user.manual_status)
    assert all(by_sql.values()), "every status occurs in the grid"


@pytest.mark.django_db
def test_the_python_and_sql_forms_of_the_clock_crossing_agree_on_every_case():
    # Ages on both sides of each limit, and windows ending on, before and after them.
    ages = [None, *(timedelta(seconds=s) for s in (0, 59, 60, 61, 119, 120, 121, 179, 180, 299, 300, 301, 420))]
    users = users_in_every_state(now=NOW, ages=ages, manual_statuses=[None])
    present = [user for user in users if user.online_status != OnlineStatus.OFFLINE]
    windows = [
        (NOW - timedelta(seconds=back), NOW + timedelta(seconds=ahead))
        for back, ahead in itertools.product((0, 1, 60, 70), (0, 1, 60))
    ]
    seen_both = set()
    for since, now in windows:
        by_sql = set(User.objects.filter(crossed_a_limit_q(since=since, now=now)).values_list("pk", flat=True))
        by_python = {
            user.pk
            for user in present
            if crossed_a_limit(last_seen=user.last_seen, last_active=user.last_active, since=since, now=now)
        }
        assert by_python == by_sql, (since, now)
        seen_both |= {bool(by_sql)}
    assert seen_both == {True, False}, "the grid has windows with and without crossings"


@pytest.mark.django_db
def test_the_python_and_sql_forms_of_the_rank_agree_and_rank_online_away_offline():
    ages = [None, timedelta(0), TIMEOUT + timedelta(seconds=1), AWAY_AFTER + timedelta(seconds=1)]
    for stored, seen, active, manual in itertools.product(OnlineStatus.values, ages, ages, [None, "away"]):
        UserFactory(
            online_status=stored,
            last_seen=None if seen is None else NOW - seen,
            last_active=None if active is None else NOW - active,
            manual_status=manual,
        )
    ranked = User.objects.annotate(rank=status_rank_expression(now=NOW)).order_by("-rank", "pk")
    for user in ranked:
        assert user.rank == status_rank(user=user, now=NOW), (user.online_status, user.last_seen, user.last_active)
    shown = [effective_status(user=user, now=NOW) for user in ranked]
    first = {status: shown.index(status) for status in OnlineStatus.values}
    assert first[OnlineStatus.ONLINE] < first[OnlineStatus.AWAY] < first[OnlineStatus.OFFLINE]
    assert shown == sorted(shown, key=[OnlineStatus.ONLINE, OnlineStatus.AWAY, OnlineStatus.OFFLINE].index)


@pytest.mark.django_db
def test_the_fast_paths_python_and_sql_forms_agree():
    """The zero-query skip trusts the Python form; the UPDATE's WHERE is the SQL form."""
    at = NOW
    ages = [None, timedelta(seconds=30), timedelta(seconds=61), timedelta(seconds=250)]
    for stored_status, seen, active_age, manual, report, active in itertools.product(
        OnlineStatus.values, ages[1:], ages, [None, OnlineStatus.AWAY], ReportedStatus.values, [True, False]
    ):
        user = UserFactory(
            online_status=stored_status,
            last_seen=at - seen,
            last_active=None if active_age is None else at - active_age,
            manual_status=manual,
        )
        session = PresenceSession(user=user, reported_status=report)
        in_python = loaded_row_shows_the_same(user=user, session=session, at=at, active=active)
        rule = shows_the_same_after_activity(reported_status=report, active=active, at=at)
        in_sql = User.objects.filter(pk=user.pk).filter(rule).exists()
        assert in_python == in_sql, (stored_status, seen, active_age, manual, report, active)


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_fast_paths_sql_text_agrees_with_its_q_and_python_forms():
    """The one-statement heartbeat (users.services.presence) writes with the SQL text form."""
    margin = TIMEOUT / 2
    # Each limit (less the margin) exactly, and a second past it.
    ages = [None, timedelta(0), TIMEOUT - margin, TIMEOUT - margin + timedelta(seconds=1), AWAY_AFTER - margin]
    ages += [AWAY_AFTER - margin + timedelta(seconds=1)]
    users = users_in_every_state(now=NOW, ages=ages, manual_statuses=[None, OnlineStatus.AWAY, OnlineStatus.ONLINE])
    ids = [user.pk for user in users]
    outcomes = set()
    for report, active, later in itertools.product(
        ReportedStatus.values, [True, False], [timedelta(0), timedelta(seconds=30), timedelta(minutes=4)]
    ):
        at = NOW + later
        by_q = set(
            User.objects.filter(pk__in=ids)
            .filter(shows_the_same_after_activity(reported_status=report, active=active, at=at))
            .values_list("pk", flat=True)
        )
        with connection.cursor() as cursor:
            rule = shows_the_same_after_activity_sql(active=active)
            cursor.execute(
                f'SELECT "id" FROM "users" WHERE "id" = ANY(%(ids)s) AND {rule}',
                {"ids": ids, **shows_the_same_after_activity_params(reported_status=report, active=active, at=at)},
            )
            by_text = {row[0] for row in cursor.fetchall()}
        assert by_text == by_q, (report, active, later)
        for user in users:
            if user.last_seen is None:
                continue  # never loaded with a request: the Python form is never asked about it
            session = PresenceSession(user=user, reported_status=report)
            in_python = loaded_row_shows_the_same(user=user, session=session, at=at, active=active)
            assert in_python == (user.pk in by_text), (user.online_status, user.last_seen, user.last_active, report)
        outcomes.add(frozenset(by_text))
    assert any(outcomes) and all(len(same) < len(users) for same in outcomes), "both answers occur in the grid"
    assert len(outcomes) > 3, "the flags and the time change the answer"


@pytest.mark.django_db
def test_online_is_the_status_computed_now_not_the_column():
    user = UserFactory(online_status=OnlineStatus.ONLINE, last_seen=timezone.now(), last_active=timezone.now())
    assert effective_status(user=user) == OnlineStatus.ONLINE
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.PRESENCE_INACTIVITY_TIMEOUT + 1)):
        assert effective_status(user=user) != OnlineStatus.ONLINE


@pytest.mark.django_db
def test_the_python_and_sql_forms_of_the_aggregate_across_devices_agree():
    reports = [(), ("online",), ("away",), ("online", "away"), ("away", "away"), ("online", "online")]
    expected = {}
    for live, ended in itertools.product(reports, [(), ("online",), ("away",)]):
        user = UserFactory()
        for status in live:
            PresenceSession.objects.create(user=user, reported_status=status, created_at=NOW, last_seen=NOW)
        for status in ended:  # ended sessions report nothing
            PresenceSession.objects.create(
                user=user, reported_status=status, created_at=NOW, last_seen=NOW, ended_at=NOW
            )
        expected[user.pk] = aggregate_status(live)
    in_sql = dict(
        User.objects.filter(pk__in=expected)
        .annotate(aggregate=aggregate_status_expression())
        .values_list("pk", "aggregate")
    )
    assert in_sql == expected
    assert set(expected.values()) == set(OnlineStatus.values)
