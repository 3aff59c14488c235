"""Issue 15, storage: registry credentials, per-renter volumes, the cluster's storage class and
volume cap, and a job's credential, volume and failover-region choice."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0007_endpoints"),
        ("marketplace", "0005_booking_lost_gpu_seconds"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="cluster",
            name="max_volume_gib",
            field=models.PositiveIntegerField(default=100, help_text="The largest volume a renter may ask for."),
        ),
        migrations.AddField(
            model_name="cluster",
            name="storage_class",
            field=models.CharField(
                blank=True,
                help_text="The StorageClass renters' volumes use; blank = no volumes offered.",
                max_length=253,
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="allow_other_regions",
            field=models.BooleanField(default=False, help_text="Failover may move the job out of the booked region."),
        ),
        migrations.CreateModel(
            name="RegistryCredential",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(help_text="Your label, e.g. ghcr-acme.", max_length=63)),
                ("registry", models.CharField(help_text="The registry's host[:port], e.g. ghcr.io.", max_length=253)),
                ("username", models.CharField(max_length=200)),
                ("password_sealed", models.TextField(help_text="Fernet-sealed password or token; never shown again.")),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "renter",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="registry_credentials",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={"ordering": ["renter_id", "name"]},
        ),
        migrations.AddField(
            model_name="job",
            name="registry_credential",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="jobs",
                to="scheduler.registrycredential",
            ),
        ),
        migrations.CreateModel(
            name="Volume",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("size_gib", models.PositiveIntegerField()),
                (
                    "storage_class",
                    models.CharField(help_text="The owner's storage class when it was asked for.", max_length=253),
                ),
                ("pvc_name", models.CharField(blank=True, max_length=63)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("requested", "Created at the first job's launch"),
                            ("created", "On the cluster"),
                            ("deleted", "Deleted"),
                        ],
                        default="requested",
                        max_length=10,
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "cluster",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="volumes", to="scheduler.cluster"
                    ),
                ),
                (
                    "renter",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="volumes",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "server",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="+", to="marketplace.server"
                    ),
                ),
            ],
            options={"ordering": ["-created_at"]},
        ),
        migrations.AddField(
            model_name="job",
            name="volume",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="jobs",
                to="scheduler.volume",
            ),
        ),
        migrations.AddConstraint(
            model_name="registrycredential",
            constraint=models.UniqueConstraint(fields=("renter", "name"), name="registry_credential_unique_name"),
        ),
        migrations.AddConstraint(
            model_name="volume",
            constraint=models.CheckConstraint(condition=models.Q(("size_gib__gte", 1)), name="volume_size_positive"),
        ),
        migrations.AddConstraint(
            model_name="volume",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status", "deleted"), _negated=True),
                fields=("renter", "server"),
                name="volume_one_per_renter_and_server",
            ),
        ),
    ]
