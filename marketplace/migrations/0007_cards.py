# Issue 14 (cards). Written by hand; operations added as the models land.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("marketplace", "0006_refund_hardening"),
    ]

    operations = []
