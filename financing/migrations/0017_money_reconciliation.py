# Written by hand (not makemigrations): the money reconciler's run and alert models.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("financing", "0016_chain_confirmations"),
    ]

    operations = [
        migrations.CreateModel(
            name="MoneyReconciliation",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("ran_at", models.DateTimeField(auto_now_add=True)),
                ("checks", models.JSONField(help_text="[{name, expected, actual, ok, details}]")),
                ("mismatches", models.PositiveIntegerField()),
            ],
            options={
                "ordering": ["-ran_at"],
            },
        ),
        migrations.CreateModel(
            name="MoneyAlert",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "check_name",
                    models.CharField(help_text="The check's name, as in MoneyReconciliation.checks.", max_length=120),
                ),
                ("message", models.CharField(max_length=500)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("resolved_at", models.DateTimeField(blank=True, null=True)),
                (
                    "cleared_by",
                    models.ForeignKey(
                        blank=True,
                        help_text="The first later run that found the check clean (empty while it still fails).",
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="financing.moneyreconciliation",
                    ),
                ),
                (
                    "last_seen",
                    models.ForeignKey(
                        help_text="The latest run that failed it.",
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="financing.moneyreconciliation",
                    ),
                ),
                (
                    "raised_by",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="financing.moneyreconciliation",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at"],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("resolved_at__isnull", True)),
                        fields=("check_name",),
                        name="moneyalert_one_open_per_check",
                    )
                ],
            },
        ),
    ]
