import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0005_scale"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="cluster",
            name="ssh_service_type",
            field=models.CharField(
                choices=[
                    ("NodePort", "NodePort (a node's address and a port 30000-32767)"),
                    ("LoadBalancer", "LoadBalancer (an address from the cluster's load balancer)"),
                ],
                default="NodePort",
                help_text="The kind of Service that exposes renters' SSH sessions on this cluster.",
                max_length=12,
            ),
        ),
        migrations.AddField(
            model_name="node",
            name="external_address",
            field=models.CharField(
                blank=True,
                help_text="ExternalIP, else InternalIP, as the node reports it (SSH via NodePort).",
                max_length=253,
            ),
        ),
        migrations.CreateModel(
            name="SshKey",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=60)),
                ("key_type", models.CharField(max_length=40)),
                ("public_key", models.TextField()),
                ("fingerprint", models.CharField(max_length=60)),
                ("bits", models.PositiveIntegerField(default=0)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="ssh_keys",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["user_id", "created_at", "id"],
                "constraints": [
                    models.UniqueConstraint(fields=("user", "fingerprint"), name="ssh_key_unique_fingerprint_per_user")
                ],
            },
        ),
    ]
