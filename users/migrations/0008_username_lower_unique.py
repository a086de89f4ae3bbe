"""Usernames unique whatever their case, in the database (users.models.User.Meta.constraints).

Before this, only the service's lookup kept `Frank` and `frank` apart, and two admins adding
them at once could both pass it. Rows that already collide are not merged or renamed here
(which account is the person is an admin's call): the migration stops and names them.
"""

from django.core.management.base import CommandError
from django.db import migrations, models
from django.db.models.functions import Lower


def colliding_usernames(apps):
    """{lowercased name: [usernames]} for every name held by more than one account."""
    User = apps.get_model("users", "User")
    names = User.objects.annotate(name=Lower("username"))
    taken = names.values("name").annotate(accounts=models.Count("id")).filter(accounts__gt=1).values("name")
    collisions = {}
    for name, username in names.filter(name__in=taken).values_list("name", "username"):
        collisions.setdefault(name, []).append(username)
    # Sorted here, not by the database: the same order whatever its collation.
    return {name: sorted(collisions[name]) for name in sorted(collisions)}


def refuse_colliding_usernames(apps, schema_editor):
    collisions = colliding_usernames(apps)
    if collisions:
        listed = "; ".join(", ".join(names) for names in collisions.values())
        raise CommandError(
            "Usernames that differ only in case must be renamed before this migration "
            f"(users.0008), one account of each group: {listed}"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("users", "0007_present_username_index"),
    ]

    operations = [
        migrations.RunPython(refuse_colliding_usernames, migrations.RunPython.noop, elidable=True),
        migrations.AddConstraint(
            model_name="user",
            constraint=models.UniqueConstraint(
                Lower("username"),
                name="users_username_lower_unique",
                violation_error_message="A user with that username already exists.",
            ),
        ),
    ]
