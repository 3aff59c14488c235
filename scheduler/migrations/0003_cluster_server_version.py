from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0002_cluster_private_network"),
    ]

    operations = [
        migrations.AddField(
            model_name="cluster",
            name="server_version",
            field=models.CharField(
                blank=True,
                help_text="The API server's version as last read (decides user namespaces).",
                max_length=64,
            ),
        ),
    ]
