from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0004_exposed_ports_endpoints"),
    ]

    operations = []
