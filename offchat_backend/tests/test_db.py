"""offchat_backend.db: ids_in filters as `__in` does, with one parameter on PostgreSQL."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from offchat_backend.db import ids_in
from users.models import User
from users.tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_ids_in_finds_what_in_finds():
    users = UserFactory.create_batch(5)
    wanted = [users[0].pk, users[3].pk, users[3].pk, 10**9]  # a repeat and an id no one has
    found = set(User.objects.filter(ids_in("pk", wanted)).values_list("pk", flat=True))
    assert found == set(User.objects.filter(pk__in=wanted).values_list("pk", flat=True)) == {users[0].pk, users[3].pk}
    assert not User.objects.filter(ids_in("pk", [])).exists()
    assert set(User.objects.exclude(ids_in("pk", wanted)).values_list("pk", flat=True)) == {
        user.pk for user in users[1:3] + users[4:]
    }
    assert list(User.objects.filter(ids_in("pk", wanted), is_staff=False).order_by("pk")) == [users[0], users[3]]


def test_ids_in_takes_ids_only():
    with pytest.raises(ValueError):
        User.objects.filter(ids_in("pk", ["1; DROP TABLE users"]))


@pytest.mark.postgres
def test_on_postgresql_a_thousand_ids_are_one_text_parameter():
    """The array's text, not psycopg2's ARRAY[...] of one constant per id (AnyOf's docstring)."""
    users = UserFactory.create_batch(3)
    ids = [user.pk for user in users] + list(range(10**8, 10**8 + 997))
    with CaptureQueriesContext(connection) as captured:
        assert len(list(User.objects.filter(ids_in("pk", ids)))) == 3
    (sql,) = [query["sql"] for query in captured]
    listed = ",".join(map(str, ids))
    assert sql.endswith(f'"users"."id" = ANY(\'{{{listed}}}\'::bigint[])') and "ARRAY[" not in sql
