from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("financing", "0011_losses"),
    ]

    operations = [
        migrations.AddField(
            model_name="vaultday",
            name="share_price",
            field=models.DecimalField(
                blank=True,
                decimal_places=18,
                help_text="USDai a share was worth on chain at the day's run; empty when the chain could not be read.",
                max_digits=38,
                null=True,
            ),
        ),
    ]
