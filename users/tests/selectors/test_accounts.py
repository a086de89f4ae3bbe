"""The account lists' querysets (users.selectors.accounts): the status filter in the form
whose plan survives stale statistics, and still the rule of users.presence_rules; roles and
permissions."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from users.models import OnlineStatus, ReportedStatus, User
from users.presence_rules import effective_status, status_q
from users.selectors import accounts
from users.selectors.accounts import online_users_for_admin, shown_status, users_for_admin
from users.tests.factories import StaffFactory, UserFactory
from users.tests.helpers import planned_without_seqscan, users_in_every_state

NOW = timezone.now().replace(microsecond=0)
TIMEOUT = timedelta(seconds=120)
AWAY_AFTER = timedelta(seconds=300)


@pytest.mark.django_db
def test_shown_status_selects_exactly_the_users_the_rule_shows_so():
    ages = [None, timedelta(0), TIMEOUT - timedelta(seconds=1), TIMEOUT, AWAY_AFTER, AWAY_AFTER + timedelta(hours=1)]
    users = users_in_every_state(now=NOW, ages=ages, manual_statuses=[None, *ReportedStatus.values])
    for status in OnlineStatus.values:
        selected = set(shown_status(User.objects.all(), status, now=NOW).values_list("pk", flat=True))
        assert selected == {user.pk for user in users if effective_status(user=user, now=NOW) == status}, status
        assert selected, f"{status} occurs in the grid"


PRESENT = 2_000
TOTAL = 20_000


def _seed_users_and_make_the_statistics_stale():
    """TOTAL users, the first PRESENT online. ANALYZE sees their activity ten minutes old;
    then heartbeats move it to now with no ANALYZE since, as on a live server between two
    autovacuum runs: every present user's timestamps are past the histogram's end."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO users (password, is_superuser, username, first_name, last_name, email, is_staff,
                               is_active, date_joined, online_status, last_seen, last_active,
                               share_presence, presence_update_id)
            SELECT '!', false, 'stats-' || lpad(n::text, 6, '0'), '', '', '', false, true, now(),
                   CASE WHEN n <= %(present)s THEN 'online' ELSE 'offline' END,
                   now() - interval '10 minutes' - (n %% 3600) * interval '1 second',
                   now() - interval '10 minutes' - (n %% 3600) * interval '1 second',
                   true, 0
            FROM generate_series(1, %(total)s) AS n
            """,
            {"present": PRESENT, "total": TOTAL},
        )
        cursor.execute("ANALYZE users")
        cursor.execute("UPDATE users SET last_seen = %s, last_active = %s WHERE online_status = 'online'", [NOW, NOW])


def _plan(queryset):
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_page_of_online_users_is_read_off_the_index_in_order_even_with_stale_statistics():
    _seed_users_and_make_the_statistics_stale()
    assert online_users_for_admin(now=NOW).count() == PRESENT

    # The rule as plain comparisons: the planner reads the histogram, expects next to no
    # online user, and sorts all of them. This is the trap the selector's form avoids.
    plain = _plan(users_for_admin().filter(status_q(OnlineStatus.ONLINE, now=NOW))[:50])
    assert "Sort" in plain, plain

    page = _plan(online_users_for_admin(now=NOW)[:50])
    assert "Index Scan using users_present_username_idx" in page, page
    assert "Sort" not in page, page


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_online_filter_through_the_api_uses_the_same_form(staff_client):
    _seed_users_and_make_the_statistics_stale()
    with CaptureQueriesContext(connection) as queries:
        body = staff_client.get("/api/users/admin/users/", {"online_status": "online"}).json()
    assert (len(body["results"]), body["count"], body["count_capped"]) == (50, 1000, True)
    page_sql = next(q["sql"] for q in queries if 'FROM "users"' in q["sql"] and "LIMIT 50" in q["sql"])
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + page_sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Scan using users_present_username_idx" in plan and "Sort" not in plan, plan


def test_staff_hold_every_admin_permission_and_other_users_none():
    staff, member = StaffFactory.build(), UserFactory.build()
    assert (accounts.role_of(staff), accounts.permissions_of(staff)) == ("admin", list(accounts.STAFF_PERMISSIONS))
    assert (accounts.role_of(member), accounts.permissions_of(member)) == ("user", [])
    assert {"view_users", "force_logout_user", "manage_users"} <= set(accounts.STAFF_PERMISSIONS)


def test_a_role_grants_staff_exactly_when_role_of_would_name_it():
    for role in accounts.ROLES:
        assert accounts.role_of(UserFactory.build(is_staff=accounts.role_grants_staff(role))) == role


@pytest.mark.django_db
@pytest.mark.parametrize("spelling", ["Carol", "carol", "CAROL", "cArOl"])
def test_a_username_is_taken_whatever_its_case(spelling):
    UserFactory(username="Carol")
    assert accounts.username_taken(username=spelling)
    assert not accounts.username_taken(username="Caroline")
    assert not accounts.username_taken(username="Caro")


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_username_lookup_is_answered_by_the_case_insensitive_unique_index():
    # username__iexact compared UPPER() forms and read every account's name (327 ms at
    # 1,000,000 accounts); the lookup must be the constraint's own expression.
    UserFactory(username="Carol")
    with CaptureQueriesContext(connection) as queries:
        accounts.username_taken(username="carol")
    plan = planned_without_seqscan(queries[-1]["sql"])
    assert "users_username_lower_unique" in plan, plan
