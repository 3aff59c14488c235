"""No GPU held twice for overlapping time: a PostgreSQL exclusion constraint.

SQLite has no exclusion constraints; there the booking service checks for
overlaps inside an IMMEDIATE transaction, which SQLite serialises.
"""

from django.contrib.postgres.operations import BtreeGistExtension
from django.db import migrations

CONSTRAINT = (
    "ALTER TABLE marketplace_bookinggpu ADD CONSTRAINT bookinggpu_no_overlap "
    "EXCLUDE USING gist (gpu_id WITH =, tstzrange(start, \"end\", '[)') WITH &&) WHERE (held)"
)


def add_constraint(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CONSTRAINT)


def drop_constraint(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE marketplace_bookinggpu DROP CONSTRAINT bookinggpu_no_overlap")


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0003_bookings")]

    operations = [
        BtreeGistExtension(),
        migrations.RunPython(add_constraint, drop_constraint),
    ]
