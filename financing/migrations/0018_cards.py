# Issue 14 (cards). Written by hand; operations added as the models land.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("financing", "0017_money_reconciliation"),
    ]

    operations = []
