# Issue 14 (linked wallets). Written by hand; operations added as the models land.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("financing", "0018_cards"),
    ]

    operations = []
