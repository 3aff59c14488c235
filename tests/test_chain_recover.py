"""``manage.py chain_recover`` on a real Hardhat 2 node wiped under the books
(``hardhat_reset``, same chain id): deploy afresh, replay the confirmed rows in order with
fresh nonces (no handler, no posting), resume; a crash mid-replay and a rerun send each
row once. A history the chain cannot reproduce (the vault accruing with block time) is
refused before anything is sent."""

from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from web3 import Web3

from financing.chain import node as chain_node
from financing.chain.client import Chain, address_for, rpc_chain
from financing.chain.deploy import deploy
from financing.models import ChainAlert, ChainDeployment, ChainOp, Posting, Wallet
from financing.selectors.ledger import usdai_balance
from financing.services import outbox
from financing.services.reconcile import chain_reconcile
from financing.services.vault import redemption_request, vault_deposit, vault_service
from financing.services.wallets import usdai_buy
from tests.chain_fixtures import drain
from tests.hardhat_node import HARDHAT_KEYS
from tests.test_onchain import titled_collateral

pytestmark = pytest.mark.django_db
E18 = 10**18
DEPLOY_TXS = 9  # deploy(): four contracts, five role grants


class Crash(Exception):
    """The process dies here."""


def _hardhat_reset(url: str) -> None:
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
    assert w3.provider.make_request("hardhat_reset", [])["result"] is True


@pytest.fixture
def hardhat(hardhat_rpc_url, settings, request):
    settings.CHAIN_RPC_URL = hardhat_rpc_url
    settings.CHAIN_SIGNER_KEY = HARDHAT_KEYS[0]
    chain_node.chain_reset()
    request.addfinalizer(chain_node.chain_reset)
    node = rpc_chain(hardhat_rpc_url)
    ChainDeployment.objects.create(
        chain_id=node.chain_id, addresses=deploy(node), operator=address_for(0), genesis_hash=node.genesis_hash()
    )
    return node


def test_a_reset_chain_is_recovered_by_replaying_the_confirmed_rows_once_even_across_a_crash(
    hardhat, hardhat_rpc_url, lender, owner, operator, monkeypatch
):
    # given activity confirmed on the node: USDai minted, a deposit, a redemption paid, a title minted
    usdai_buy(user=lender, amount=Decimal("1000.00"))
    deposit = vault_deposit(user=lender, amount=Decimal("600.00"))
    assert drain()["failed"] == 0
    redemption = redemption_request(user=lender, shares_amount=Decimal("100"))
    drain()
    vault_service()
    collateral = titled_collateral(owner, operator)
    assert drain()["failed"] == 0
    confirmed = list(ChainOp.objects.order_by("pk"))
    assert {op.status for op in confirmed} == {"confirmed"} and len(confirmed) >= 8
    assert chain_reconcile().mismatches == 0
    old = {op.pk: op.tx_hash for op in confirmed}
    deposit.refresh_from_db()
    redemption.refresh_from_db()
    shares, paid = deposit.shares, (redemption.status, redemption.paid, redemption.request_id)

    # when the node is wiped and the books queue more: sending halts
    _hardhat_reset(hardhat_rpc_url)
    usdai_buy(user=lender, amount=Decimal("5.00"))
    (new_row,) = ChainOp.objects.filter(status=ChainOp.Status.PENDING)
    postings = Posting.objects.count()
    assert outbox.chain_send()["halted"] == "chain reset"

    # then the dry run prints the plan and sends nothing
    from io import StringIO

    out = StringIO()
    call_command("chain_recover", "--dry-run", stdout=out)
    text = out.getvalue()
    assert all(f"replay  #{op.pk} {op.key}" in text for op in confirmed) and "Dry run" in text
    assert hardhat.chain_nonce(0) == 0 and not hardhat.has_code("SUSDai")

    # when the recovery crashes right after broadcasting the replay of the deposit
    real_broadcast = Chain.broadcast

    def crash_after(self, raw):
        real_broadcast(self, raw)
        if raw == ChainOp.objects.get(pk=deposit.op_id).raw_tx:
            raise Crash

    monkeypatch.setattr(Chain, "broadcast", crash_after)
    with pytest.raises(Crash):
        call_command("chain_recover", stdout=StringIO())
    monkeypatch.setattr(Chain, "broadcast", real_broadcast)

    # then the rows before it are replayed, it is signed for replay, the rest wait; sending still halts
    replay = dict(ChainOp.objects.filter(pk__in=old).values_list("pk", "replay"))
    assert [replay[pk] for pk in old if pk < deposit.op_id] == ["done"] * len([pk for pk in old if pk < deposit.op_id])
    assert replay[deposit.op_id] == "sent"
    assert {replay[pk] for pk in old if pk > deposit.op_id} == {"due"}
    assert outbox.chain_send()["halted"] == "chain recovery unfinished"
    assert ChainOp.objects.get(pk=new_row.pk).status == ChainOp.Status.PENDING

    # when it is run again
    out = StringIO()
    call_command("chain_recover", stdout=out)
    assert "Recovered" in out.getvalue()

    # then every confirmed row was replayed once, in order, with fresh nonces, keeping its old hash
    ops = list(ChainOp.objects.filter(pk__in=old).order_by("pk"))
    assert {op.replay for op in ops} == {"done"} and {op.status for op in ops} == {"confirmed"}
    for op in ops:
        # (the same bytes as before when nonce, fees and addresses came out the same: one hash)
        assert op.tx_hashes in ([old[op.pk], op.tx_hash], [op.tx_hash] if op.tx_hash == old[op.pk] else None)
        assert hardhat.receipt(op.tx_hash, timeout=0).ok
    blocks = [op.block_number for op in ops]
    assert blocks == sorted(blocks) and len(set(blocks)) == len(blocks)
    for sender in {op.sender for op in ops}:
        sent = [op.nonce for op in ops if op.sender == sender]
        first = DEPLOY_TXS if sender == 0 else 0
        assert sent == list(range(first, first + len(sent)))
        assert hardhat.chain_nonce(sender) == first + len(sent)  # nothing was sent twice

    # and no handler ran again, nothing was posted, the alert is resolved, the deployment recorded
    assert Posting.objects.count() == postings
    deposit.refresh_from_db()
    redemption.refresh_from_db()
    assert deposit.shares == shares and (redemption.status, redemption.paid, redemption.request_id) == paid
    assert not ChainAlert.objects.filter(kind="chain_reset", resolved_at__isnull=True).exists()
    deployment = ChainDeployment.objects.get(chain_id=hardhat.chain_id)
    assert deployment.genesis_hash == hardhat.genesis_hash() and len(deployment.history) == 1
    # (hardhat_reset keeps block 0: the reset showed as no code at the recorded addresses)
    assert set(deployment.history[0]["addresses"]) == set(deployment.addresses)
    fresh = rpc_chain(hardhat_rpc_url)
    fresh.use(deployment.addresses)  # (the node's earlier tests moved the deployer's nonce: new addresses)
    assert fresh.has_code("SUSDai")

    # when the outbox runs: the row queued after the reset is sent and confirmed
    assert drain()["failed"] == 0
    new_row.refresh_from_db()
    assert new_row.status == ChainOp.Status.CONFIRMED and new_row.replay == ""

    # then the chain equals the books
    reader = rpc_chain(hardhat_rpc_url)
    reader.use(deployment.addresses)
    wallet = Wallet.objects.get(user=lender)
    assert reader.call("USDai", "balanceOf", wallet.address) == int(usdai_balance(user=lender) * E18)
    assert usdai_balance(user=lender) == Decimal("505.000000")
    assert reader.call("SUSDai", "balanceOf", wallet.address) == 500 * E18 - 10**6
    company = Wallet.objects.get(company=owner.owner_membership.company)
    assert reader.call("CaliberNFT", "ownerOf", collateral.pk) == company.address
    report = chain_reconcile()
    assert report.mismatches == 0 and report.in_flight == 0, [c for c in report.checks if not c["ok"]]

    # and a further run finds nothing to do
    with pytest.raises(CommandError, match="nothing to recover"):
        call_command("chain_recover", stdout=StringIO())


def test_a_history_the_new_chain_cannot_reproduce_is_refused_before_anything_is_sent(hardhat, hardhat_rpc_url, lender):
    # given confirmed rows, one of them a report with an accrual rate (the vault's value moves with block time)
    usdai_buy(user=lender, amount=Decimal("10.00"))
    assert drain()["failed"] == 0
    report = ChainOp.objects.create(
        key="epoch:1:report",
        contract="SUSDai",
        function="report",
        args=["0", "0", "1000", "1700000000"],
        status=ChainOp.Status.CONFIRMED,
        result={"events": [{"contract": "SUSDai", "event": "Reported", "args": {"locked": "0"}, "log_index": 0}]},
    )
    deployment = ChainDeployment.objects.get(chain_id=hardhat.chain_id)
    recorded = (deployment.addresses, deployment.genesis_hash)

    # when the node is wiped and recovery is asked for
    _hardhat_reset(hardhat_rpc_url)
    with pytest.raises(CommandError, match=rf"Refused: .*row #{report.pk} \(epoch:1:report\).*accrual rate"):
        call_command("chain_recover")

    # then nothing was deployed or sent, nothing marked, and sending still halts
    assert hardhat.chain_nonce(0) == 0 and not hardhat.has_code("SUSDai")
    deployment.refresh_from_db()
    assert (deployment.addresses, deployment.genesis_hash) == recorded and deployment.history == []
    assert not ChainOp.objects.exclude(replay="").exists()
    assert outbox.chain_send()["halted"] == "chain reset"
