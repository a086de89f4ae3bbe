from django.db import migrations

# Room in every page for a row's next version: a heartbeat's UPDATE then stays in the page as
# a HOT update (no index touched), instead of moving the row and writing every index again.
TABLES = {"users": 85, "presence_sessions": 85}


def set_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, fillfactor in TABLES.items():
        schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = {fillfactor})")


def reset_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in TABLES:
        schema_editor.execute(f"ALTER TABLE {table} RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("users", "0003_presence_sweep")]

    operations = [migrations.RunPython(set_fillfactor, reset_fillfactor)]
