"""The outbox on a real Hardhat 2 node: confirmation depth, a real reorganisation of
unconfirmed blocks (``evm_snapshot``/``evm_revert``), and a fee bump of a transaction the
node will not mine (automine off, the next block's base fee raised above its fee cap).

The node is shared by the session: each test deploys its own contracts, and leaves the
node automining with an empty mempool."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from web3 import Web3

from financing.chain import node as chain_node
from financing.chain.client import ChainError, address_for, rpc_chain
from financing.chain.deploy import deploy
from financing.models import ChainAlert, ChainDeployment, ChainOp, VaultDeposit
from financing.selectors.ledger import usdai_balance
from financing.services import outbox
from financing.services.reconcile import chain_reconcile
from financing.services.vault import vault_deposit
from financing.services.wallets import usdai_buy
from tests.chain_fixtures import drain
from tests.hardhat_node import HARDHAT_KEYS

pytestmark = pytest.mark.django_db
E18 = 10**18


def _rpc(url: str, method: str, *params):
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
    answer = w3.provider.make_request(method, list(params))
    assert "error" not in answer, answer
    return answer["result"]


@pytest.fixture
def hardhat(hardhat_rpc_url, settings, request):
    """Fresh contracts on the node, recorded as this chain's deployment; the node left automining."""
    settings.CHAIN_RPC_URL = hardhat_rpc_url
    settings.CHAIN_SIGNER_KEY = HARDHAT_KEYS[0]
    chain_node.chain_reset()
    request.addfinalizer(chain_node.chain_reset)

    def automine_again():
        _rpc(hardhat_rpc_url, "evm_setAutomine", True)
        _rpc(hardhat_rpc_url, "evm_mine")

    request.addfinalizer(automine_again)
    node = rpc_chain(hardhat_rpc_url)
    node.use(deploy(node))
    ChainDeployment.objects.create(
        chain_id=node.chain_id, addresses=node.addresses, operator=address_for(0), genesis_hash=node.genesis_hash()
    )
    return node


@pytest.mark.parametrize("in_the_new_branch", [False, True], ids=["receipt-gone", "receipt-in-another-block"])
def test_a_row_counts_only_at_depth_and_a_reorganised_receipt_is_broadcast_again(
    hardhat, hardhat_rpc_url, settings, lender, monkeypatch, in_the_new_branch
):
    # given a lender's USDai on chain (depth 1), then a depth of 3 and a deposit queued
    usdai_buy(user=lender, amount=Decimal("100.00"))
    assert drain()["failed"] == 0
    settings.CHAIN_CONFIRMATIONS = 3
    calls = []
    handler = outbox.HANDLERS["SUSDai.deposit"]
    monkeypatch.setitem(
        outbox.HANDLERS, "SUSDai.deposit", lambda op, events: (calls.append(op.pk), handler(op, events))
    )
    deposit = vault_deposit(user=lender, amount=Decimal("100.00"))
    before_deposit = _rpc(hardhat_rpc_url, "evm_snapshot")

    # when the outbox sends it: mined in block N, not confirmed, its handler not run
    assert outbox.chain_send() == {"confirmed": 0, "failed": 0, "waiting": 1}
    op = ChainOp.objects.get(pk=deposit.op_id)
    assert op.status == ChainOp.Status.MINED and op.block_number == hardhat.head()
    assert op.block_hash == hardhat.block_hash(op.block_number) != ""
    mined_in, signed = (op.block_number, op.block_hash), (op.nonce, op.tx_hash, op.raw_tx)
    assert calls == [] and VaultDeposit.objects.get(pk=deposit.pk).shares is None
    # and reconciliation counts it in flight
    assert chain_reconcile().in_flight == 1

    # and one block later (head N + 1 < N + 3 - 1) it still waits
    _rpc(hardhat_rpc_url, "evm_mine")
    assert outbox.chain_send() == {"confirmed": 0, "failed": 0, "waiting": 1}
    assert ChainOp.objects.get(pk=op.pk).status == ChainOp.Status.MINED and calls == []

    # when the two unconfirmed blocks are reorganised away: block N is now an empty block and
    # the same transaction lands in block N + 1
    _rpc(hardhat_rpc_url, "evm_revert", before_deposit)
    _rpc(hardhat_rpc_url, "evm_mine")
    assert hardhat.head() == mined_in[0] and hardhat.block_hash(mined_in[0]) != mined_in[1]
    assert hardhat.receipt(op.tx_hash, timeout=0) is None
    if in_the_new_branch:  # another node put the same transaction in the new branch's next block
        hardhat.broadcast(op.raw_tx)
        assert hardhat.receipt(op.tx_hash, timeout=0).block_number == mined_in[0] + 1
    outbox.chain_send()

    # then one reorg alert, the same bytes broadcast again (same nonce, same hash), mined at N + 1
    op.refresh_from_db()
    (alert,) = ChainAlert.objects.filter(kind="reorg")
    assert alert.op_id == op.pk and f"block {mined_in[0]}" in alert.message
    assert ("now in block" if in_the_new_branch else "is gone") in alert.message
    assert (op.nonce, op.tx_hash, op.raw_tx) == signed and op.tx_hashes == [op.tx_hash]
    assert op.status == ChainOp.Status.MINED and op.block_number == mined_in[0] + 1
    assert op.block_hash == hardhat.block_hash(mined_in[0] + 1) and calls == []

    # when the head reaches N + 1 + 3 - 1
    _rpc(hardhat_rpc_url, "evm_mine")
    assert outbox.chain_send()["confirmed"] == 0
    _rpc(hardhat_rpc_url, "evm_mine")
    assert outbox.chain_send() == {"confirmed": 1, "failed": 0, "waiting": 0}

    # then it is confirmed once, its handler ran once, and the books agree with the chain
    op.refresh_from_db()
    assert op.status == ChainOp.Status.CONFIRMED and calls == [op.pk]
    assert VaultDeposit.objects.get(pk=deposit.pk).shares == Decimal("99.999999999999000000")
    assert outbox.chain_send() == {"confirmed": 0, "failed": 0, "waiting": 0} and calls == [op.pk]
    assert hardhat.call("SUSDai", "balanceOf", lender.wallet.address) == 100 * E18 - 10**6
    report = chain_reconcile()
    assert report.mismatches == 0 and report.in_flight == 0, [c for c in report.checks if not c["ok"]]


def test_a_transaction_the_node_does_not_mine_is_bumped_at_its_nonce_up_to_the_cap(
    hardhat, hardhat_rpc_url, settings, lender
):
    # given a lender's wallet on chain, then automine off and short waits
    usdai_buy(user=lender, amount=Decimal("10.00"))
    assert drain()["failed"] == 0
    settings.CHAIN_RECEIPT_TIMEOUT_SECONDS = 0.3
    settings.CHAIN_FEE_BUMP_AFTER = 60
    settings.CHAIN_ALERT_AFTER_ATTEMPTS = 100
    _rpc(hardhat_rpc_url, "evm_setAutomine", False)
    operator_nonce = hardhat.chain_nonce(0)
    purchase = usdai_buy(user=lender, amount=Decimal("5.00"))
    op = ChainOp.objects.get(key=f"usdai:mint:{purchase.pk}")

    # when the mint is signed and broadcast, and the next block's base fee is above its fee cap
    assert outbox.chain_send()["waiting"] == 1
    op.refresh_from_db()
    assert op.status == ChainOp.Status.SIGNED and op.tx_hashes == [op.tx_hash]
    first = (op.tx_hash, op.max_fee_per_gas, op.priority_fee_per_gas)
    _rpc(hardhat_rpc_url, "hardhat_setNextBlockBaseFeePerGas", hex(op.max_fee_per_gas * 10))
    _rpc(hardhat_rpc_url, "evm_mine")

    # then the node does not mine it
    assert hardhat.receipt(op.tx_hash, timeout=0) is None

    # and a replacement at +5 % is refused by the node (only the +10 % rule lets one in)
    low = hardhat.resign(
        raw=op.raw_tx, sender_index=0, max_fee=op.max_fee_per_gas * 105 // 100, tip=op.priority_fee_per_gas * 105 // 100
    )
    with pytest.raises(ChainError, match=r"(?i)underpriced"):
        hardhat.broadcast(low.raw)

    # when the bump is due but it would pass the cap: one stuck alert, however often it is tried
    later = timezone.now() + timedelta(minutes=2)
    settings.CHAIN_MAX_FEE_GWEI = Decimal(op.max_fee_per_gas) * Decimal("1.1") / 10**9
    for _ in range(3):
        assert outbox.chain_send(now=later)["waiting"] == 1
    op.refresh_from_db()
    (stuck,) = ChainAlert.objects.filter(kind="stuck")
    assert stuck.op_id == op.pk and "CHAIN_MAX_FEE_GWEI" in stuck.message
    assert op.tx_hashes == [first[0]] and op.tx_hash == first[0]

    # when the cap allows it: re-signed at the same nonce, both fees up by at least 12.5 %
    settings.CHAIN_MAX_FEE_GWEI = Decimal(10**6)
    assert outbox.chain_send(now=later)["waiting"] == 1
    op.refresh_from_db()
    assert op.status == ChainOp.Status.SIGNED and op.tx_hashes == [first[0], op.tx_hash] and op.tx_hash != first[0]
    assert op.max_fee_per_gas * 8 >= first[1] * 9 and op.priority_fee_per_gas * 8 >= first[2] * 9
    assert op.nonce == operator_nonce

    # when a block is mined: the replacement is in it, and the row is confirmed once
    _rpc(hardhat_rpc_url, "evm_mine")
    assert outbox.chain_send(now=later) == {"confirmed": 1, "failed": 0, "waiting": 0}
    op.refresh_from_db()
    assert op.status == ChainOp.Status.CONFIRMED and hardhat.receipt(op.tx_hash, timeout=0).ok
    assert hardhat.receipt(first[0], timeout=0) is None
    assert hardhat.chain_nonce(0) == operator_nonce + 1  # one transaction at that nonce
    assert hardhat.call("USDai", "balanceOf", lender.wallet.address) == 15 * E18
    assert usdai_balance(user=lender) == Decimal("15.000000")
    assert ChainAlert.objects.filter(kind="stuck").count() == 1
