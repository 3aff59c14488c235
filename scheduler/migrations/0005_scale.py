"""Scale (issue 15): nodes' allocatable CPU and memory; where a cluster's Jobs watch resumes."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0004_exposed_ports_endpoints"),
    ]

    operations = [
        migrations.AddField(
            model_name="cluster",
            name="jobs_resource_version",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="node",
            name="cpu_allocatable_milli",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="node",
            name="memory_allocatable_mib",
            field=models.PositiveIntegerField(default=0),
        ),
    ]
