# Issue 14 (cards). Written by hand; operations added as the models land.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_api_tokens"),
    ]

    operations = [
        migrations.AddField(
            model_name="renterprofile",
            name="stripe_customer_id",
            field=models.CharField(blank=True, max_length=64),
        ),
    ]
