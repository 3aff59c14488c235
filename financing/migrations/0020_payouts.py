# Issue 14 (payouts). Written by hand (from makemigrations --dry-run, payout models only):
# payout runs, payouts and SEPA files, with the constraints that keep a payout paid once.

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0005_company_payout_details"),
        ("financing", "0019_linked_wallets"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="PayoutRun",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("period_start", models.DateTimeField()),
                ("period_end", models.DateTimeField()),
                (
                    "trigger",
                    models.CharField(choices=[("schedule", "Scheduled"), ("operator", "Operator")], max_length=8),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[("running", "Running"), ("done", "Done")], default="running", max_length=8
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-period_end", "-id"],
            },
        ),
        migrations.CreateModel(
            name="SepaFile",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "message_id",
                    models.CharField(blank=True, help_text="GrpHdr/MsgId, once the XML is built.", max_length=35),
                ),
                (
                    "xml",
                    models.TextField(blank=True, help_text="The pain.001 document; built once, then no line joins it."),
                ),
                ("total_eur", models.DecimalField(decimal_places=2, default=0, max_digits=14)),
                ("total_usd", models.DecimalField(decimal_places=6, default=0, max_digits=20)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "sent_at",
                    models.DateTimeField(
                        blank=True, help_text="Marked uploaded to the bank by an operator.", null=True
                    ),
                ),
                (
                    "run",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="sepa_files", to="financing.payoutrun"
                    ),
                ),
                (
                    "sent_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at"],
            },
        ),
        migrations.CreateModel(
            name="Payout",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("amount", models.DecimalField(decimal_places=6, help_text="USD.", max_digits=20)),
                ("rail", models.CharField(choices=[("usdai", "USDai"), ("sepa", "SEPA transfer")], max_length=5)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("pending", "Pending"),
                            ("sent", "Sent"),
                            ("confirmed", "Confirmed"),
                            ("failed", "Failed"),
                            ("withheld", "Withheld"),
                            ("carried", "Carried forward"),
                        ],
                        max_length=9,
                    ),
                ),
                ("reason", models.CharField(blank=True, max_length=300)),
                (
                    "entry_key",
                    models.CharField(blank=True, help_text="The ledger entry's key, when paid.", max_length=120),
                ),
                ("address", models.CharField(blank=True, help_text="USDai: where it is minted.", max_length=42)),
                ("end_to_end_id", models.CharField(blank=True, max_length=35)),
                ("iban", models.CharField(blank=True, max_length=34)),
                ("bic", models.CharField(blank=True, max_length=11)),
                ("amount_eur", models.DecimalField(blank=True, decimal_places=2, max_digits=14, null=True)),
                ("usd_eur_rate", models.DecimalField(blank=True, decimal_places=6, max_digits=12, null=True)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("confirmed_at", models.DateTimeField(blank=True, null=True)),
                (
                    "company",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="payouts", to="accounts.ownercompany"
                    ),
                ),
                (
                    "op",
                    models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="payout",
                        to="financing.chainop",
                    ),
                ),
                (
                    "run",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="payouts", to="financing.payoutrun"
                    ),
                ),
                (
                    "sepa_file",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="payouts",
                        to="financing.sepafile",
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
            },
        ),
        migrations.AddConstraint(
            model_name="payoutrun",
            constraint=models.CheckConstraint(
                condition=models.Q(("period_end__gt", models.F("period_start"))), name="payoutrun_period"
            ),
        ),
        migrations.AddConstraint(
            model_name="payoutrun",
            constraint=models.UniqueConstraint(
                condition=models.Q(("trigger", "schedule")),
                fields=("period_end",),
                name="payoutrun_one_scheduled_per_period",
            ),
        ),
        migrations.AddConstraint(
            model_name="sepafile",
            constraint=models.CheckConstraint(
                condition=models.Q(("sent_at__isnull", True), models.Q(("xml", ""), _negated=True), _connector="OR"),
                name="sepafile_sent_has_xml",
            ),
        ),
        migrations.AddConstraint(
            model_name="payout",
            constraint=models.UniqueConstraint(fields=("run", "company"), name="payout_once_per_run_and_company"),
        ),
        migrations.AddConstraint(
            model_name="payout",
            constraint=models.CheckConstraint(
                condition=models.Q(("amount__gt", 0), ("status", "withheld"), _connector="OR"),
                name="payout_amount_positive",
            ),
        ),
        migrations.AddConstraint(
            model_name="payout",
            constraint=models.CheckConstraint(
                condition=models.Q(("amount__gte", 0)), name="payout_amount_not_negative"
            ),
        ),
        migrations.AddConstraint(
            model_name="payout",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("status__in", ["sent", "confirmed"]), _negated=True),
                    models.Q(
                        models.Q(("entry_key", ""), _negated=True),
                        models.Q(
                            models.Q(("op__isnull", False), ("rail", "usdai")),
                            models.Q(
                                ("amount_eur__gt", 0),
                                ("rail", "sepa"),
                                ("sepa_file__isnull", False),
                                models.Q(("end_to_end_id", ""), _negated=True),
                            ),
                            _connector="OR",
                        ),
                    ),
                    _connector="OR",
                ),
                name="payout_paid_has_entry_and_rail",
            ),
        ),
        migrations.AddConstraint(
            model_name="payout",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("status__in", ["pending", "sent", "confirmed"]),
                    models.Q(
                        ("entry_key", ""),
                        ("op__isnull", True),
                        ("sepa_file__isnull", True),
                        models.Q(("reason", ""), _negated=True),
                    ),
                    _connector="OR",
                ),
                name="payout_unpaid_moves_nothing",
            ),
        ),
        migrations.AddConstraint(
            model_name="payout",
            constraint=models.UniqueConstraint(
                condition=models.Q(("end_to_end_id", ""), _negated=True),
                fields=("end_to_end_id",),
                name="payout_end_to_end_unique",
            ),
        ),
        migrations.AddConstraint(
            model_name="payout",
            constraint=models.UniqueConstraint(
                condition=models.Q(("entry_key", ""), _negated=True), fields=("entry_key",), name="payout_entry_unique"
            ),
        ),
    ]
