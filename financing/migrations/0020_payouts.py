# Issue 14 (payouts). Written by hand; operations added as the models land.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("financing", "0019_linked_wallets"),
    ]

    operations = []
