# Issue 14 (linked wallets). Written by hand; operations added as the models land.
# SIWE nonces and links, the chain watcher's events and cursor, and the operations a user
# signs with their own wallet (or USDai received from outside).

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("financing", "0018_cards"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="ChainCursor",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("chain_id", models.BigIntegerField(unique=True)),
                ("block", models.BigIntegerField(help_text="Every block up to this one has been read.")),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
        ),
        migrations.CreateModel(
            name="ChainEvent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("key", models.CharField(max_length=80, unique=True)),
                ("chain_id", models.BigIntegerField()),
                ("block_number", models.BigIntegerField()),
                ("tx_hash", models.CharField(max_length=66)),
                ("log_index", models.PositiveIntegerField()),
                ("contract", models.CharField(max_length=20)),
                ("event", models.CharField(max_length=40)),
                ("args", models.JSONField(default=dict, help_text="Integers as strings.")),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                (
                    "entry",
                    models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="chain_event",
                        to="financing.journalentry",
                    ),
                ),
                (
                    "user",
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
                "ordering": ["block_number", "log_index"],
            },
        ),
        migrations.CreateModel(
            name="SiweNonce",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("nonce", models.CharField(max_length=32, unique=True)),
                ("address", models.CharField(help_text="EIP-55; the address the message names.", max_length=42)),
                ("domain", models.CharField(max_length=255)),
                ("chain_id", models.BigIntegerField()),
                (
                    "message",
                    models.TextField(help_text="The message as issued; the signed one must match it field by field."),
                ),
                ("issued_at", models.DateTimeField()),
                ("expires_at", models.DateTimeField()),
                ("used_at", models.DateTimeField(blank=True, null=True)),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="siwe_nonces",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-issued_at"],
            },
        ),
        migrations.CreateModel(
            name="LinkedWallet",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("address", models.CharField(help_text="EIP-55 checksummed.", max_length=42)),
                ("chain_id", models.BigIntegerField()),
                ("signature", models.CharField(max_length=200)),
                ("linked_at", models.DateTimeField()),
                ("unlinked_at", models.DateTimeField(blank=True, null=True)),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="linked_wallets",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "proof",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.PROTECT, related_name="link", to="financing.siwenonce"
                    ),
                ),
            ],
            options={
                "ordering": ["-linked_at"],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("unlinked_at__isnull", True)),
                        fields=("user",),
                        name="linkedwallet_one_per_user",
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("unlinked_at__isnull", True)),
                        fields=("address",),
                        name="linkedwallet_address_once",
                    ),
                ],
            },
        ),
        migrations.CreateModel(
            name="WalletOperation",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "address",
                    models.CharField(help_text="The address it concerns (linked or custodial).", max_length=42),
                ),
                (
                    "kind",
                    models.CharField(
                        choices=[
                            ("deposit", "Deposit"),
                            ("redeem", "Redemption request"),
                            ("cancel", "Redemption cancelled"),
                            ("redeem_paid", "Redemption paid"),
                            ("received", "USDai received"),
                        ],
                        max_length=12,
                    ),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[("pending", "Pending"), ("confirmed", "Credited"), ("failed", "Failed")],
                        default="pending",
                        max_length=10,
                    ),
                ),
                ("tx_hash", models.CharField(max_length=66)),
                (
                    "submitted",
                    models.BooleanField(default=False, help_text="Posted by the page (else found by the watcher)."),
                ),
                (
                    "amount",
                    models.DecimalField(blank=True, decimal_places=6, help_text="USDai.", max_digits=20, null=True),
                ),
                ("shares", models.DecimalField(blank=True, decimal_places=18, max_digits=40, null=True)),
                (
                    "request_id",
                    models.BigIntegerField(blank=True, help_text="The vault's redemption queue id.", null=True),
                ),
                (
                    "shares_left",
                    models.DecimalField(
                        blank=True,
                        decimal_places=18,
                        help_text="Of a redemption request: still queued.",
                        max_digits=40,
                        null=True,
                    ),
                ),
                (
                    "paid",
                    models.DecimalField(
                        decimal_places=6, default=0, help_text="Of a request: USDai paid.", max_digits=20
                    ),
                ),
                ("failure_message", models.CharField(blank=True, max_length=300)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("confirmed_at", models.DateTimeField(blank=True, null=True)),
                (
                    "event",
                    models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="operation",
                        to="financing.chainevent",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="wallet_operations",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-pk"],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("submitted", True)), fields=("tx_hash",), name="walletop_submitted_once"
                    )
                ],
            },
        ),
    ]
