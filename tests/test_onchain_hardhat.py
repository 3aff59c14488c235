"""The services and the outbox against a real Hardhat 2 node over HTTP JSON-RPC.

The node (``tests/hardhat_node.py``) lives for the whole session and keeps its
state, so this test deploys its own contracts and reads only them."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from financing.chain import node as chain_node
from financing.chain.client import address_for, rpc_chain
from financing.chain.deploy import deploy
from financing.models import ChainDeployment, ChainOp, Redemption, Wallet
from financing.selectors.ledger import usdai_balance
from financing.services.collateral import collateral_approve, collateral_register
from financing.services.epochs import epoch_close
from financing.services.reconcile import chain_reconcile
from financing.services.revenue import settlements_journal
from financing.services.titles import collateral_record, record_hash
from financing.services.vault import redemption_request, vault_deposit, vault_service
from financing.services.wallets import usdai_buy
from marketplace.models import Settlement
from marketplace.services import bookings
from tests.chain_fixtures import drain
from tests.factories import make_listing
from tests.hardhat_node import CHAIN_ID, HARDHAT_KEYS
from tests.test_onchain_losses import lost_server

pytestmark = pytest.mark.django_db
E18 = 10**18


def test_the_vault_titles_and_revenue_anchor_run_on_a_hardhat_node(
    hardhat_rpc_url, settings, request, lender, owner, operator, renter
):
    # given fresh contracts deployed on the node by its account #0, recorded as this chain's deployment
    settings.CHAIN_RPC_URL = hardhat_rpc_url
    settings.CHAIN_SIGNER_KEY = HARDHAT_KEYS[0]
    chain_node.chain_reset()
    request.addfinalizer(chain_node.chain_reset)
    node = rpc_chain(hardhat_rpc_url)
    assert node.chain_id == CHAIN_ID and not node.embedded
    addresses = deploy(node)
    ChainDeployment.objects.create(chain_id=node.chain_id, addresses=addresses, operator=address_for(0))
    assert address_for(0) == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"

    # when a lender buys $1,000 of USDai, deposits it, and redeems 100 sUSDai through the queue
    usdai_buy(user=lender, amount=Decimal("1000.00"))
    deposit = vault_deposit(user=lender, amount=Decimal("1000.00"))
    assert drain()["failed"] == 0
    redemption = redemption_request(user=lender, shares_amount=Decimal("100"))
    drain()
    vault_service()
    drain()

    # and an operator approves a server as collateral (its title is minted)
    listing = make_listing(owner, gpu_count=2, price="2.00")
    collateral = collateral_register(
        owner=owner.owner_membership.company,
        server=listing.server,
        purchase_price=Decimal("30000"),
        purchase_date=date(2026, 1, 1),
        custodian="Equinix FR5",
        custody_receipt="EQX-9",
        insurer="Lloyd's",
        policy_number="P-9",
        coverage=Decimal("30000"),
        insurance_expires=date(2028, 1, 1),
    )
    collateral = collateral_approve(collateral=collateral, operator=operator)
    expected_hash = record_hash(collateral_record(collateral))

    # and a settlement's epoch closes (its Merkle root is anchored)
    end = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=3)
    booking = bookings.booking_create(
        renter=renter, listing=listing, gpu_count=1, start=end - timedelta(hours=1), end=end
    )
    Settlement.objects.create(
        booking=booking,
        server=listing.server,
        interval_start=end - timedelta(hours=1),
        interval_end=end,
        gpu_seconds=3600,
        gross_amount=Decimal("2.00"),
    )
    settlements_journal()
    epoch = epoch_close()
    drain()

    # then every row has its receipt from the node
    ops = list(ChainOp.objects.order_by("pk"))
    assert {op.status for op in ops} == {"confirmed"}
    assert all(op.block_number and op.block_timestamp and op.gas_used for op in ops)
    assert [op.function for op in ops if op.contract] == [
        "approve",
        "approve",
        "mint",
        "deposit",
        "request_redeem",
        "service",
        "mint",
        "anchor",
    ]

    # and the books agree with what a fresh HTTP client reads back
    reader = rpc_chain(hardhat_rpc_url)
    reader.use(addresses)
    wallet = Wallet.objects.get(user=lender)
    company_wallet = Wallet.objects.get(company=owner.owner_membership.company)
    deposit.refresh_from_db()
    redemption.refresh_from_db()
    assert deposit.shares == Decimal("999.999999999999000000")
    assert (redemption.request_id, redemption.status, redemption.paid) == (
        0,
        Redemption.Status.PAID,
        Decimal("100.000000"),
    )
    assert usdai_balance(user=lender) == Decimal("100.000000")
    assert reader.call("USDai", "balanceOf", wallet.address) == 100 * E18
    assert reader.call("USDai", "totalSupply") == 1000 * E18
    assert reader.call("SUSDai", "balanceOf", wallet.address) == 900 * E18 - 10**6
    assert reader.call("SUSDai", "idle") == 900 * E18
    assert reader.call("CaliberNFT", "ownerOf", collateral.pk) == company_wallet.address
    assert "0x" + reader.call("CaliberNFT", "record_hash", collateral.pk).hex() == expected_hash
    assert "0x" + reader.call("RevenueAnchor", "roots", epoch.number).hex() == epoch.root != ""

    # and reconciliation over JSON-RPC finds nothing amiss
    report = chain_reconcile()
    assert report.mismatches == 0, [c for c in report.checks if not c["ok"]]
    assert report.in_flight == 0


def test_a_lost_servers_loss_is_written_down_for_every_lender_alike_on_a_hardhat_node(
    hardhat_rpc_url, settings, request, owner, operator
):
    # given fresh contracts on the node (as above)
    settings.CHAIN_RPC_URL = hardhat_rpc_url
    settings.CHAIN_SIGNER_KEY = HARDHAT_KEYS[0]
    chain_node.chain_reset()
    request.addfinalizer(chain_node.chain_reset)
    node = rpc_chain(hardhat_rpc_url)
    ChainDeployment.objects.create(chain_id=node.chain_id, addresses=deploy(node), operator=address_for(0))

    # then the credit audit's loss scenario runs there as on the in-process EVM: non-accrual,
    # foreclosure, the claim paid short and written down on chain, a late lender at the
    # written-down price, every lender paid their share and the queue empty, the books = the chain
    def step(at):
        epoch_close(now=at)  # the node keeps its own clock: a close "ahead" of it counts as its block
        assert drain()["failed"] == 0

    lost_server(owner, operator, step=step, dead_shares=10**6)
