"""Issue 15, endpoint storage: an inference endpoint's registry credential (its image-pull Secret)
and the renter's volume it mounts at /workspace, like a job's (0008_storage)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0008_storage"),
    ]

    operations = [
        migrations.AddField(
            model_name="endpoint",
            name="registry_credential",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="endpoints",
                to="scheduler.registrycredential",
            ),
        ),
        migrations.AddField(
            model_name="endpoint",
            name="volume",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="endpoints",
                to="scheduler.volume",
            ),
        ),
    ]
