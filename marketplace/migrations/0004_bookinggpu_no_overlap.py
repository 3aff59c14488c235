"""No GPU held twice for overlapping time: a PostgreSQL exclusion constraint (and a GiST index for search).

SQLite has no exclusion constraints; there the booking service checks for
overlaps inside an IMMEDIATE transaction, which SQLite serialises.
"""

from django.contrib.postgres.operations import BtreeGistExtension
from django.db import migrations

CONSTRAINT = (
    "ALTER TABLE marketplace_bookinggpu ADD CONSTRAINT bookinggpu_no_overlap "
    "EXCLUDE USING gist (gpu_id WITH =, tstzrange(start, \"end\", '[)') WITH &&) WHERE (held)"
)


# Search asks "which availability slots contain [start, end)?": a GiST index on
# the slot's range answers it without scanning every slot.
SLOT_INDEX = 'CREATE INDEX slot_span_gist ON marketplace_availabilityslot USING gist (tstzrange(start, "end"))'


def add_constraint(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CONSTRAINT)
        schema_editor.execute(SLOT_INDEX)


def drop_constraint(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX slot_span_gist")
        schema_editor.execute("ALTER TABLE marketplace_bookinggpu DROP CONSTRAINT bookinggpu_no_overlap")


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0003_bookings")]

    operations = [
        BtreeGistExtension(),
        migrations.RunPython(add_constraint, drop_constraint),
    ]
