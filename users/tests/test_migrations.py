import importlib

import pytest
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("users", "0007_present_username_index")]
CASE_UNIQUE = [("users", "0008_username_lower_unique")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def schema_before_case_unique_usernames():
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    yield migrate(BEFORE)
    migrate(latest)


@pytest.mark.django_db(transaction=True)
def test_case_unique_usernames_refuse_to_migrate_over_collisions_and_name_them(schema_before_case_unique_usernames):
    User = schema_before_case_unique_usernames.get_model("users", "User")
    for username in ["Frank", "frank", "FRANK", "grace", "Heidi", "heidi"]:
        User.objects.create(username=username, password="!")

    with pytest.raises(CommandError) as refused:
        migrate(CASE_UNIQUE)

    assert str(refused.value).endswith("one account of each group: FRANK, Frank, frank; Heidi, heidi")
    assert User.objects.count() == 6  # nothing renamed or removed

    User.objects.filter(username__in=["FRANK", "frank", "heidi"]).delete()
    migrate(CASE_UNIQUE)
    assert sorted(User.objects.values_list("username", flat=True)) == ["Frank", "Heidi", "grace"]


def pattern_indexes_on_users():
    """Read by the migration's own query, so the test and the migration look for the same indexes."""
    dropping = importlib.import_module("users.migrations.0009_drop_username_pattern_index")
    with connection.cursor() as cursor:
        cursor.execute(dropping.PATTERN_INDEXES, [dropping.PATTERN])
        return [name for (name,) in cursor.fetchall()]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_username_pattern_index_that_nothing_reads_is_dropped_and_comes_back_on_the_way_down():
    # Every status change writes into each index of users; this one serves LIKE 'prefix%' only.
    assert pattern_indexes_on_users() == []
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    try:
        migrate(CASE_UNIQUE)
        assert pattern_indexes_on_users() == ["users_username_e8658fc8_like"]
    finally:
        migrate(latest)
    assert pattern_indexes_on_users() == []
