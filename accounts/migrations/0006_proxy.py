"""The ``infer`` API token scope: calling one's inference endpoints through the platform's proxy."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0005_company_payout_details"),
    ]

    operations = [
        migrations.AlterField(
            model_name="apitoken",
            name="scope",
            field=models.CharField(
                choices=[
                    ("read", "Read: look, never change anything"),
                    ("book", "Book: rent, pay and cancel; wallet and vault"),
                    ("owner", "Owner: servers, listings, clusters and loans"),
                    ("admin", "Admin: everything the account may do"),
                    ("infer", "Infer: call your inference endpoints"),
                ],
                default="read",
                max_length=10,
            ),
        ),
        migrations.RemoveConstraint(model_name="apitoken", name="api_token_scope_known"),
        migrations.AddConstraint(
            model_name="apitoken",
            constraint=models.CheckConstraint(
                condition=models.Q(("scope__in", ["read", "book", "owner", "admin", "infer"])),
                name="api_token_scope_known",
            ),
        ),
    ]
