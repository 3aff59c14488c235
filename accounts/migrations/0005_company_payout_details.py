# Issue 14 (payouts). Written by hand; operations added as the models land.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_renter_cards"),
    ]

    operations = []
