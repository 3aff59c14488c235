# Issue 14 (cards). Written by hand; operations added as the models land.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_api_tokens"),
    ]

    operations = []
