# Issue 14 (payouts). Written by hand: the SEPA creditor's address and VAT id, and the payout rail.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0004_renter_cards"),
    ]

    operations = [
        migrations.AddField(
            model_name="ownercompany",
            name="vat_id",
            field=models.CharField(blank=True, max_length=20, verbose_name="VAT id"),
        ),
        migrations.AddField(
            model_name="ownercompany",
            name="country",
            field=models.CharField(blank=True, help_text="ISO 3166 alpha-2.", max_length=2),
        ),
        migrations.AddField(
            model_name="ownercompany",
            name="address_line1",
            field=models.CharField(blank=True, max_length=70, verbose_name="address"),
        ),
        migrations.AddField(
            model_name="ownercompany",
            name="address_line2",
            field=models.CharField(blank=True, max_length=70, verbose_name="postcode and town"),
        ),
        migrations.AddField(
            model_name="ownercompany",
            name="payout_rail",
            field=models.CharField(
                choices=[("sepa", "Bank transfer (SEPA)"), ("usdai", "USDai to the payout wallet")],
                default="sepa",
                help_text="Used when both an IBAN and a payout wallet are given.",
                max_length=5,
            ),
        ),
    ]
