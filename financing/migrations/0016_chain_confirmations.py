"""The outbox waits for confirmation depth (a mined status, the block's hash), bumps a stuck
transaction's fees at the same nonce (every hash kept), and replays confirmed rows onto a
reset chain (``manage.py chain_recover``: a per-row replay marker, the deployment's history)."""

from django.db import migrations, models


def _hashes_so_far(apps, schema_editor):
    ChainOp = apps.get_model("financing", "ChainOp")
    for op in ChainOp.objects.exclude(tx_hash="").only("pk", "tx_hash"):
        ChainOp.objects.filter(pk=op.pk).update(tx_hashes=[op.tx_hash])


class Migration(migrations.Migration):
    dependencies = [("financing", "0015_chain_genesis")]

    operations = [
        migrations.AddField(
            model_name="chaindeployment",
            name="history",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="Earlier deployments on this chain id (reset, recovered): addresses, genesis hash.",
            ),
        ),
        migrations.AddField(
            model_name="chainop",
            name="block_hash",
            field=models.CharField(blank=True, help_text="Checked again before the row is confirmed.", max_length=66),
        ),
        migrations.AddField(
            model_name="chainop",
            name="max_fee_per_gas",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="chainop",
            name="priority_fee_per_gas",
            field=models.BigIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="chainop",
            name="replay",
            field=models.CharField(
                blank=True,
                choices=[
                    ("", "Not replayed"),
                    ("due", "To replay"),
                    ("sent", "Replay signed, not yet mined"),
                    ("done", "Replayed"),
                ],
                default="",
                max_length=4,
            ),
        ),
        migrations.AddField(
            model_name="chainop",
            name="signed_at",
            field=models.DateTimeField(blank=True, help_text="When the current signature was made.", null=True),
        ),
        migrations.AddField(
            model_name="chainop",
            name="tx_hashes",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="Every hash this row was signed as, oldest first (fee bumps, replays).",
            ),
        ),
        migrations.AlterField(
            model_name="chainop",
            name="status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("signed", "Signed, not yet confirmed"),
                    ("mined", "Mined, awaiting confirmations"),
                    ("confirmed", "Confirmed"),
                    ("failed", "Failed"),
                ],
                default="pending",
                max_length=10,
            ),
        ),
        migrations.RunPython(_hashes_so_far, migrations.RunPython.noop),
    ]
