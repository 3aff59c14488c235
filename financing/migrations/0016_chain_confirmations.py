from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("financing", "0015_chain_genesis")]

    operations = []
