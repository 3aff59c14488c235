"""Inference endpoints: metering and lifecycle fields on ``Endpoint``, and the simulated
cluster's Deployments (``SimDeployment``)."""

import uuid

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0006_sessions"),
    ]

    operations = [
        migrations.AddField(
            model_name="endpoint",
            name="finished_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="endpoint",
            name="gpu_seconds",
            field=models.BigIntegerField(default=0, help_text="Reported to the marketplace as usage."),
        ),
        migrations.AddField(
            model_name="endpoint",
            name="launched_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="endpoint",
            name="metered_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="endpoint",
            name="node_name",
            field=models.CharField(blank=True, max_length=253),
        ),
        migrations.AddField(
            model_name="endpoint",
            name="ready_replica_seconds",
            field=models.BigIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="endpoint",
            name="reported_until",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="endpoint",
            name="running_image",
            field=models.CharField(blank=True, help_text="The image the replicas run, once rolled.", max_length=400),
        ),
        migrations.AddField(
            model_name="endpoint",
            name="stop_requested",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="endpoint",
            name="unreported_gpu_seconds",
            field=models.BigIntegerField(default=0),
        ),
        migrations.CreateModel(
            name="SimDeployment",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("namespace", models.CharField(max_length=63)),
                ("name", models.CharField(max_length=63)),
                ("uid", models.UUIDField(default=uuid.uuid4, unique=True)),
                ("node", models.CharField(max_length=253)),
                ("spec", models.JSONField()),
                ("created_at", models.DateTimeField()),
                ("rolled_at", models.DateTimeField()),
                (
                    "cluster",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="sim_deployments",
                        to="scheduler.cluster",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("cluster", "namespace", "name"), name="simdeployment_unique_name")
                ],
            },
        ),
    ]
