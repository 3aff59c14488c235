from django.db import migrations


def forwards(apps, schema_editor):
    from marketplace.catalogue import load_catalogue

    load_catalogue(apps.get_model("marketplace", "GpuModel"), apps.get_model("marketplace", "Region"))


class Migration(migrations.Migration):
    dependencies = [("marketplace", "0001_initial")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
