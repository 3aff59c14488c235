# Issue 16 (placement v2): the CPU and memory a booking takes, the listing's
# per-GPU share, and the allocation change feed the scheduler's engine reads.

import django.core.validators
import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


def backfill_booking_share(apps, schema_editor):
    """Existing bookings take today's even split: the server's CPU and memory
    ÷ its GPUs, × the booking's GPUs (what their pods already request)."""
    Server = apps.get_model("marketplace", "Server")
    Booking = apps.get_model("marketplace", "Booking")
    booked = Booking.objects.values("server_id")
    servers = Server.objects.filter(pk__in=booked).annotate(gpu_total=models.Count("gpus", distinct=True))
    for server in servers.iterator():
        gpus = max(server.gpu_total, 1)
        for gpu_count in Booking.objects.filter(server=server).values_list("gpu_count", flat=True).distinct():
            Booking.objects.filter(server=server, gpu_count=gpu_count).update(
                cpu_milli=server.cpu_milli // gpus * gpu_count,
                memory_mib=server.memory_mib // gpus * gpu_count,
            )


class Migration(migrations.Migration):
    dependencies = [
        ("marketplace", "0007_cards"),
    ]

    operations = [
        migrations.AddField(
            model_name="booking",
            name="cpu_milli",
            field=models.PositiveIntegerField(default=0, verbose_name="CPU (millicores)"),
        ),
        migrations.AddField(
            model_name="booking",
            name="memory_mib",
            field=models.PositiveBigIntegerField(default=0, verbose_name="RAM (MiB)"),
        ),
        migrations.AddField(
            model_name="listing",
            name="cpu_milli_per_gpu",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Empty: an even split of the server's CPU.",
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(1),
                    django.core.validators.MaxValueValidator(1024000),
                ],
                verbose_name="CPU per GPU (millicores)",
            ),
        ),
        migrations.AddField(
            model_name="listing",
            name="memory_mib_per_gpu",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Empty: an even split of the server's RAM.",
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(1),
                    django.core.validators.MaxValueValidator(16777216),
                ],
                verbose_name="RAM per GPU (MiB)",
            ),
        ),
        migrations.CreateModel(
            name="AllocationChange",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("changed_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                (
                    "server",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to="marketplace.server"
                    ),
                ),
            ],
            options={"ordering": ["id"]},
        ),
        migrations.RunPython(backfill_booking_share, migrations.RunPython.noop),
    ]
