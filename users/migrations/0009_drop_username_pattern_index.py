"""Drop the `varchar_pattern_ops` index Django makes beside every unique CharField on PostgreSQL.

It serves `LIKE 'prefix%'` lookups, and nothing here makes one: the list search is
`icontains`, which no btree serves, and the case-insensitive name lookup reads
users_username_lower_unique (users.selectors.accounts.username_taken). Yet every status change
is a non-HOT update of `users` and writes an entry into it: the sweep's UPDATE of 9,000 users
going offline took 88 ms with it and 79 ms without (bench/analysis.md), and it was 31 MB at
1,000,000 accounts. Django recreates it if the username field is ever altered;
users/tests/test_migrations.py says so.
"""

from django.db import migrations

PATTERN_INDEXES = (
    "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'users'"
    " AND indexdef LIKE %s"
)
PATTERN = "%varchar_pattern_ops%"
DJANGOS_NAME = "users_username_e8658fc8_like"


def drop_pattern_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return  # only PostgreSQL's backend makes them
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(PATTERN_INDEXES, [PATTERN])
        names = [name for (name,) in cursor.fetchall()]
    for name in names:
        schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")


def recreate_the_pattern_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {schema_editor.quote_name(DJANGOS_NAME)} ON users (username varchar_pattern_ops)"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("users", "0008_username_lower_unique"),
    ]

    operations = [
        # Not elidable: a squash must keep it, or fresh databases would get the index back.
        migrations.RunPython(drop_pattern_indexes, recreate_the_pattern_index),
    ]
