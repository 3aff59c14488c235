"""A JSON-RPC chain reset under the books (a Hardhat node wiped with ``hardhat_reset``,
same chain id): sending halts with one alert, and reconciliation says why.

The Hardhat node is shared by the session; every test that uses it deploys its own
contracts first, so wiping it here takes nothing from them."""

from decimal import Decimal

import pytest
from web3 import Web3

from financing.chain import node as chain_node
from financing.chain.client import address_for, rpc_chain
from financing.chain.deploy import deploy
from financing.models import ChainAlert, ChainDeployment, ChainOp
from financing.services import outbox
from financing.services.reconcile import chain_reconcile
from financing.services.vault import vault_deposit
from financing.services.wallets import usdai_buy
from tests.chain_fixtures import drain
from tests.hardhat_node import HARDHAT_KEYS

pytestmark = pytest.mark.django_db


def _hardhat_reset(url: str) -> None:
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
    assert w3.provider.make_request("hardhat_reset", [])["result"] is True


def test_a_reset_chain_halts_sending_with_one_alert_and_fails_reconciliation(
    hardhat_rpc_url, settings, request, lender
):
    # given fresh contracts on the node, recorded with the node's block 0, and rows confirmed there
    settings.CHAIN_RPC_URL = hardhat_rpc_url
    settings.CHAIN_SIGNER_KEY = HARDHAT_KEYS[0]
    chain_node.chain_reset()
    request.addfinalizer(chain_node.chain_reset)
    node = rpc_chain(hardhat_rpc_url)
    recorded_genesis = node.genesis_hash()
    ChainDeployment.objects.create(
        chain_id=node.chain_id, addresses=deploy(node), operator=address_for(0), genesis_hash=recorded_genesis
    )
    usdai_buy(user=lender, amount=Decimal("100.00"))
    vault_deposit(user=lender, amount=Decimal("100.00"))
    assert drain()["failed"] == 0
    confirmed = list(ChainOp.objects.filter(status=ChainOp.Status.CONFIRMED).values_list("pk", flat=True))
    assert confirmed and not ChainOp.objects.exclude(status=ChainOp.Status.CONFIRMED).exists()
    assert chain_reconcile().mismatches == 0

    # when the node is wiped (same chain id) and the books queue more
    _hardhat_reset(hardhat_rpc_url)
    assert rpc_chain(hardhat_rpc_url).chain_id == node.chain_id
    usdai_buy(user=lender, amount=Decimal("5.00"))
    open_rows = ChainOp.objects.filter(status__in=[ChainOp.Status.PENDING, ChainOp.Status.SIGNED]).count()
    assert open_rows >= 1

    # then sending halts, three times over, with nothing signed and one alert
    for _ in range(3):
        assert outbox.chain_send() == {"confirmed": 0, "failed": 0, "waiting": open_rows, "halted": "chain reset"}
    assert not ChainOp.objects.filter(status=ChainOp.Status.SIGNED).exists()
    assert ChainOp.objects.filter(status=ChainOp.Status.PENDING).count() == open_rows
    assert list(ChainOp.objects.filter(status=ChainOp.Status.CONFIRMED).values_list("pk", flat=True)) == confirmed
    alerts = list(ChainAlert.objects.filter(kind="chain_reset"))
    assert len(alerts) == 1 and "not the recorded deployment" in alerts[0].message

    # and reconciliation reports the one reason, alerted although rows are in flight
    report = chain_reconcile()
    assert report.in_flight == open_rows
    assert [c["name"] for c in report.checks] == ["Chain is the recorded deployment"]
    assert report.mismatches == 1 and not report.checks[0]["ok"]
    assert ChainAlert.objects.filter(kind="reconcile", resolved_at__isnull=True).count() == 1
