"""Recover from a reset JSON-RPC chain (``chain_reset`` alert): deploy afresh, replay the
confirmed outbox rows onto the new contracts, resume sending (``outbox.chain_recover``)."""

from django.core.management.base import BaseCommand, CommandError

from financing.chain.client import ChainError
from financing.services.outbox import RecoveryRefused, RecoveryStopped, chain_recover


class Command(BaseCommand):
    help = (
        "After a chain reset: deploy the contracts again, replay every confirmed outbox row to them in order"
        " (fresh nonces; no receipt handler, no posting), then let the outbox send the rest. Safe to rerun."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Print the plan; send nothing.")

    def handle(self, *args, dry_run=False, **options):
        try:
            plan = chain_recover(dry_run=dry_run)
        except RecoveryRefused as exc:
            raise CommandError(f"Refused: {exc}") from exc
        except RecoveryStopped as exc:
            raise CommandError(f"Stopped part-way (run again once fixed; replayed rows are not resent): {exc}") from exc
        except ChainError as exc:
            raise CommandError(f"Chain unreachable: {exc}") from exc
        for line in plan.lines():
            self.stdout.write(line)
        if dry_run:
            self.stdout.write(self.style.WARNING("Dry run: nothing deployed or sent."))
            return
        for name, address in plan.addresses.items():
            self.stdout.write(f"{name:<14} {address}")
        self.stdout.write(self.style.SUCCESS(f"Recovered: {len(plan.replayed)} rows replayed; sending resumes."))
