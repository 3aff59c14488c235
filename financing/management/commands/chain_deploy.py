"""Deploy the contracts to the JSON-RPC chain in ``CHAIN_RPC_URL`` and record their addresses.

The embedded chain needs no deployment: it deploys itself at every start.
"""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from financing.chain.client import ChainError, address_for, rpc_chain
from financing.chain.deploy import deploy
from financing.models import ChainDeployment


class Command(BaseCommand):
    help = "Deploy USDai, sUSDai, CaliberNFT and RevenueAnchor to CHAIN_RPC_URL (once per chain)."

    def add_arguments(self, parser):
        parser.add_argument("--force", action="store_true", help="Deploy again and replace the recorded addresses.")

    def handle(self, *args, force=False, **options):
        if not settings.CHAIN_RPC_URL:
            raise CommandError("CHAIN_RPC_URL is empty: the embedded chain deploys itself at start.")
        try:
            chain = rpc_chain(settings.CHAIN_RPC_URL)
            existing = ChainDeployment.objects.filter(chain_id=chain.chain_id).first()
            if existing and not force:
                raise CommandError(f"Chain {chain.chain_id} already has contracts: {existing.addresses} (use --force).")
            addresses = deploy(chain)
            genesis = chain.genesis_hash()
        except ChainError as exc:
            raise CommandError(f"Deployment failed: {exc}") from exc
        ChainDeployment.objects.update_or_create(
            chain_id=chain.chain_id,
            defaults={
                "addresses": addresses,
                "operator": address_for(0),
                "genesis_timestamp": None,
                "genesis_hash": genesis,
            },
        )
        for name, address in addresses.items():
            self.stdout.write(f"{name:<14} {address}")
        self.stdout.write(self.style.SUCCESS(f"Deployed to chain {chain.chain_id}."))
