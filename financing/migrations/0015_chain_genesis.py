"""A deployment records its chain's block 0 hash, so a reset chain (same id, new genesis) is detected."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("financing", "0014_usdai_purchase_intent"),
    ]

    operations = [
        migrations.AddField(
            model_name="chaindeployment",
            name="genesis_hash",
            field=models.CharField(
                blank=True,
                help_text="Block 0's hash when deployed; another one means the chain was reset.",
                max_length=66,
            ),
        ),
    ]
