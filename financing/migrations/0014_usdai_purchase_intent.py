"""A USDai purchase is written (pending, with its idempotency key) before the card is charged.

Rows written before this migration were written after a successful charge:
they become succeeded, completed when created, with a key of their own.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("financing", "0013_epoch_rate_tbill_accrual"),
    ]

    operations = [
        migrations.AddField(
            model_name="usdaipurchase",
            name="completed_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="usdaipurchase",
            name="failure_message",
            field=models.CharField(blank=True, max_length=300),
        ),
        migrations.AddField(
            model_name="usdaipurchase",
            name="idempotency_key",
            field=models.CharField(max_length=160, null=True),
        ),
        migrations.AddField(
            model_name="usdaipurchase",
            name="payment_method",
            field=models.CharField(blank=True, help_text="Kept to present the same charge again.", max_length=100),
        ),
        migrations.AddField(
            model_name="usdaipurchase",
            name="status",
            field=models.CharField(
                choices=[("pending", "Pending"), ("succeeded", "Succeeded"), ("failed", "Failed")],
                default="pending",
                max_length=12,
            ),
        ),
        migrations.RunSQL(
            sql=(
                "UPDATE financing_usdaipurchase SET status = 'succeeded', completed_at = created_at, "
                "idempotency_key = 'usdai-legacy-' || id"
            ),
            reverse_sql=migrations.RunSQL.noop,
        ),
        migrations.AlterField(
            model_name="usdaipurchase",
            name="idempotency_key",
            field=models.CharField(
                help_text="Sent with the charge: a retry never charges twice.", max_length=160, unique=True
            ),
        ),
        migrations.AlterField(
            model_name="usdaipurchase",
            name="reference",
            field=models.CharField(blank=True, help_text="The PaymentIntent id, once known.", max_length=120),
        ),
        migrations.AddConstraint(
            model_name="usdaipurchase",
            constraint=models.UniqueConstraint(
                condition=models.Q(("reference", ""), _negated=True),
                fields=("gateway", "reference"),
                name="usdai_purchase_reference_unique",
            ),
        ),
        migrations.AddConstraint(
            model_name="usdaipurchase",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("status", "succeeded"), _negated=True),
                    models.Q(("reference", ""), _negated=True),
                    _connector="OR",
                ),
                name="usdai_purchase_succeeded_has_reference",
            ),
        ),
    ]
