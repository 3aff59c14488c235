"""The contracts on an in-process EVM (eth-tester, py-evm), deployed from the committed artifacts.

One deployment per module; every test starts from its snapshot. Amounts are
integer wei (18 decimals); shares start at one per wei.
"""

from contextlib import contextmanager
from itertools import pairwise
from types import SimpleNamespace

import pytest
import vyper
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from web3 import EthereumTesterProvider, Web3
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from contracts import artifact
from financing.merkle import MerkleTree, leaf_hash, node_hash

WAD = 10**18
UNLOCK = 7 * 24 * 3600
MIN_REDEMPTION = WAD
DEAD = "0x000000000000000000000000000000000000dEaD"
DEAD_SHARES = 10**6
MAX_UINT = 2**256 - 1
AT_BLOCK = 2**64  # a report "as of" later than its block counts as of the block
RECORD = bytes.fromhex("11" * 32)
MISSING_ROLE = "access_control: account is missing role"

RECEIVER_SOURCE = """
# pragma version ~=0.4.3
@external
def onERC721Received(operator: address, sender: address, token_id: uint256, data: Bytes[1024]) -> bytes4:
    return method_id("onERC721Received(address,address,uint256,bytes)", output_type=bytes4)
"""


def _deploy(w3, abi, bytecode, *args, sender):
    tx_hash = w3.eth.contract(abi=abi, bytecode=bytecode).constructor(*args).transact({"from": sender})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    return w3.eth.contract(address=receipt.contractAddress, abi=abi)


def send(fn, sender):
    receipt = fn.w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender}))
    assert receipt.status == 1
    return receipt


def calldata_gas(data: bytes) -> int:
    return sum(4 if byte == 0 else 16 for byte in data)


def events(contract, name, receipt) -> list[dict]:
    return [dict(log.args) for log in getattr(contract.events, name)().process_receipt(receipt, errors=DISCARD)]


@contextmanager
def reverts(message: str):
    with pytest.raises((TransactionFailed, ContractLogicError)) as info:
        yield
    assert message in str(info.value)


@pytest.fixture(scope="module")
def chain():
    tester = EthereumTester(PyEVMBackend())
    w3 = Web3(EthereumTesterProvider(tester))
    admin, registrar, loan_manager, operator, alice, bob, carol, attacker, protocol, stranger = w3.eth.accounts

    def deploy(name, *args):
        build = artifact(name)
        return _deploy(w3, build["abi"], build["bytecode"], *args, sender=admin)

    usdai = deploy("USDai")
    vault = deploy("SUSDai", usdai.address, UNLOCK, MIN_REDEMPTION)
    nft = deploy("CaliberNFT", "https://infrafi.example/caliber/", protocol)
    anchor = deploy("RevenueAnchor")
    send(usdai.functions.set_minter(vault.address, True), admin)
    send(vault.functions.grantRole(vault.functions.OPERATOR_ROLE().call(), operator), admin)
    send(nft.functions.grantRole(nft.functions.REGISTRAR_ROLE().call(), registrar), admin)
    send(nft.functions.grantRole(nft.functions.LOAN_MANAGER_ROLE().call(), loan_manager), admin)
    send(anchor.functions.grantRole(anchor.functions.OPERATOR_ROLE().call(), operator), admin)
    for holder in (alice, bob, carol, attacker):
        send(usdai.functions.mint(holder, 1_000_000 * WAD), admin)
        send(usdai.functions.approve(vault.address, MAX_UINT), holder)

    receiver_out = vyper.compile_code(RECEIVER_SOURCE, output_formats=["abi", "bytecode"])
    receiver = _deploy(w3, receiver_out["abi"], receiver_out["bytecode"], sender=admin)

    return SimpleNamespace(
        tester=tester,
        snapshot=tester.take_snapshot(),
        w3=w3,
        usdai=usdai,
        vault=vault,
        nft=nft,
        anchor=anchor,
        receiver=receiver,
        admin=admin,
        registrar=registrar,
        loan_manager=loan_manager,
        operator=operator,
        alice=alice,
        bob=bob,
        carol=carol,
        attacker=attacker,
        protocol=protocol,
        stranger=stranger,
    )


@pytest.fixture
def c(chain):
    chain.tester.revert_to_snapshot(chain.snapshot)
    return chain


def mint_title(c, token_id=1, to=None, record=RECORD):
    return send(c.nft.functions.mint(to or c.alice, token_id, record), c.registrar)


def safe_transfer(c, *args):
    signature = "safeTransferFrom(address,address,uint256" + (",bytes)" if len(args) == 4 else ")")
    return c.nft.get_function_by_signature(signature)(*args)


def travel(c, timestamp):
    """The next transaction, and views read at ``pending``, run at ``timestamp``."""
    c.tester.time_travel(timestamp)
    assert c.tester.get_block_by_number("pending")["timestamp"] == timestamp


def pending(fn):
    return fn.call(block_identifier="pending")


class OneBlock:
    """Transactions sent inside the ``with`` are mined together, in the order sent, in one block."""

    def __init__(self, c):
        self.c = c
        self.hashes = []
        self.senders = []
        self.receipts = []

    def __enter__(self):
        self.c.tester.disable_auto_mine_transactions()
        return self

    def send(self, fn, sender):
        # eth-tester checks each pending transaction's nonce against the mined state: one per sender.
        assert sender not in self.senders, "one transaction per sender in a block"
        self.senders.append(sender)
        self.hashes.append(fn.transact({"from": sender, "gas": 3_000_000}))

    def __exit__(self, *exc):
        self.c.tester.enable_auto_mine_transactions()
        if exc[0] is None:
            self.receipts = [self.c.w3.eth.get_transaction_receipt(h) for h in self.hashes]
            assert [r.status for r in self.receipts] == [1] * len(self.hashes)
            assert len({r.blockNumber for r in self.receipts}) == 1


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def lock_after_gain(state: tuple[int, int, int], t: int, gain: int) -> tuple[int, int, int]:
    """The vault's (locked, locked_at, unlock_end) after a gain at ``t`` (Yearn V3's weighted-average end)."""
    locked, locked_at, end = state
    remaining = 0 if locked == 0 or t >= end else ceil_div(locked * (end - t), end - locked_at)
    if gain == 0:
        return state
    new_end = t + UNLOCK if remaining == 0 else t + (remaining * (end - t) + gain * UNLOCK) // (remaining + gain)
    return remaining + gain, t, new_end


def vault_lock(c) -> tuple[int, int, int]:
    v = c.vault.functions
    return v.locked().call(), v.locked_at().call(), v.unlock_end().call()


def value_of(c, holder, block="latest") -> int:
    v = c.vault.functions
    return v.convertToAssets(v.balanceOf(holder).call(block_identifier=block)).call(block_identifier=block)


def now(c) -> int:
    """A timestamp a little ahead of the pending block, to ``travel`` to."""
    return c.tester.get_block_by_number("pending")["timestamp"] + 10


# ---------------------------------------------------------------- CaliberNFT


def test_nft_mint_records_owner_hash_uri_and_events(c):
    # when the registrar mints title 42 to alice
    receipt = mint_title(c, token_id=42)

    # then alice owns it, with its record hash and its URI
    assert c.nft.functions.ownerOf(42).call() == c.alice
    assert c.nft.functions.balanceOf(c.alice).call() == 1
    assert c.nft.functions.record_hash(42).call() == RECORD
    assert c.nft.functions.tokenURI(42).call() == "https://infrafi.example/caliber/42"
    assert c.nft.functions.lien(42).call() is False
    assert events(c.nft, "Transfer", receipt) == [{"sender": "0x" + "00" * 20, "receiver": c.alice, "token_id": 42}]
    assert events(c.nft, "Minted", receipt) == [{"token_id": 42, "to": c.alice, "record_hash": RECORD}]
    # and the same id cannot be minted twice
    with reverts("CaliberNFT: token already minted"):
        mint_title(c, token_id=42, to=c.bob)


def test_nft_metadata_and_interfaces(c):
    assert c.nft.functions.name().call() == "CALIBER GPU Title"
    assert c.nft.functions.symbol().call() == "CALIBER"
    assert c.nft.functions.protocol().call() == c.protocol
    for interface_id, supported in [
        ("0x01ffc9a7", True),  # ERC-165
        ("0x80ac58cd", True),  # ERC-721
        ("0x5b5e139f", True),  # ERC-721 metadata
        ("0x780e9d63", False),  # ERC-721 enumerable
    ]:
        assert c.nft.functions.supportsInterface(bytes.fromhex(interface_id[2:])).call() is supported
    with reverts("CaliberNFT: invalid token ID"):
        c.nft.functions.tokenURI(7).call()


def test_nft_update_record(c):
    mint_title(c)
    new_record = bytes.fromhex("22" * 32)

    receipt = send(c.nft.functions.update_record(1, new_record), c.registrar)

    assert c.nft.functions.record_hash(1).call() == new_record
    assert events(c.nft, "RecordUpdated", receipt) == [{"token_id": 1, "record_hash": new_record}]


def test_nft_roles_are_enforced(c):
    mint_title(c)
    # a stranger (or the loan manager) cannot mint or update records
    with reverts(MISSING_ROLE):
        send(c.nft.functions.mint(c.bob, 2, RECORD), c.stranger)
    with reverts(MISSING_ROLE):
        send(c.nft.functions.mint(c.bob, 2, RECORD), c.loan_manager)
    with reverts(MISSING_ROLE):
        send(c.nft.functions.update_record(1, RECORD), c.stranger)
    # and a stranger (or the registrar) cannot set liens or foreclose
    with reverts(MISSING_ROLE):
        send(c.nft.functions.set_lien(1, True), c.registrar)
    with reverts(MISSING_ROLE):
        send(c.nft.functions.foreclose(1), c.stranger)
    # nor grant themselves a role
    with reverts(MISSING_ROLE):
        send(c.nft.functions.grantRole(c.nft.functions.REGISTRAR_ROLE().call(), c.stranger), c.stranger)


def test_lien_blocks_every_transfer(c):
    # given alice's title under a lien, with bob approved for it
    mint_title(c)
    send(c.nft.functions.approve(c.bob, 1), c.alice)
    receipt = send(c.nft.functions.set_lien(1, True), c.loan_manager)
    assert events(c.nft, "LienSet", receipt) == [{"token_id": 1, "active": True}]
    assert c.nft.functions.lien(1).call() is True

    # then neither the owner nor the approved address can move it, by any transfer function
    for sender in (c.alice, c.bob):
        with reverts("CaliberNFT: lien"):
            send(c.nft.functions.transferFrom(c.alice, c.carol, 1), sender)
        with reverts("CaliberNFT: lien"):
            send(safe_transfer(c, c.alice, c.carol, 1), sender)
        with reverts("CaliberNFT: lien"):
            send(safe_transfer(c, c.alice, c.carol, 1, b"loan"), sender)
    assert c.nft.functions.ownerOf(1).call() == c.alice


def test_lien_cleared_transfer_works(c):
    # given a lien set, then cleared
    mint_title(c)
    send(c.nft.functions.set_lien(1, True), c.loan_manager)
    send(c.nft.functions.set_lien(1, False), c.loan_manager)

    # when alice transfers the title
    receipt = send(c.nft.functions.transferFrom(c.alice, c.bob, 1), c.alice)

    # then bob owns it
    assert c.nft.functions.ownerOf(1).call() == c.bob
    assert c.nft.functions.balanceOf(c.alice).call() == 0
    assert c.nft.functions.balanceOf(c.bob).call() == 1
    assert events(c.nft, "Transfer", receipt) == [{"sender": c.alice, "receiver": c.bob, "token_id": 1}]


def test_transfer_authorisation_and_safe_transfers(c):
    mint_title(c)
    # a stranger cannot move alice's title
    with reverts("CaliberNFT: caller is not token owner or approved"):
        send(c.nft.functions.transferFrom(c.alice, c.stranger, 1), c.stranger)
    # an operator approved for all can, and the token approval is cleared by the transfer
    send(c.nft.functions.approve(c.carol, 1), c.alice)
    send(c.nft.functions.setApprovalForAll(c.bob, True), c.alice)
    assert c.nft.functions.isApprovedForAll(c.alice, c.bob).call() is True
    send(safe_transfer(c, c.alice, c.bob, 1, b""), c.bob)
    assert c.nft.functions.ownerOf(1).call() == c.bob
    assert c.nft.functions.getApproved(1).call() == "0x" + "00" * 20
    # a contract receiver must answer onERC721Received
    send(safe_transfer(c, c.bob, c.receiver.address, 1), c.bob)
    assert c.nft.functions.ownerOf(1).call() == c.receiver.address
    mint_title(c, token_id=2)
    with pytest.raises((TransactionFailed, ContractLogicError)):
        send(safe_transfer(c, c.alice, c.usdai.address, 2), c.alice)
    assert c.nft.functions.ownerOf(2).call() == c.alice


def test_foreclosure_moves_a_liened_title_to_the_protocol(c):
    # given alice's title under a lien
    mint_title(c)
    send(c.nft.functions.approve(c.bob, 1), c.alice)
    send(c.nft.functions.set_lien(1, True), c.loan_manager)

    # when the loan manager forecloses
    receipt = send(c.nft.functions.foreclose(1), c.loan_manager)

    # then the protocol holds it, without lien or approval
    assert c.nft.functions.ownerOf(1).call() == c.protocol
    assert c.nft.functions.lien(1).call() is False
    assert c.nft.functions.getApproved(1).call() == "0x" + "00" * 20
    assert c.nft.functions.balanceOf(c.alice).call() == 0
    assert c.nft.functions.balanceOf(c.protocol).call() == 1
    assert events(c.nft, "Transfer", receipt) == [{"sender": c.alice, "receiver": c.protocol, "token_id": 1}]
    assert events(c.nft, "Foreclosed", receipt) == [{"token_id": 1, "from_": c.alice, "to": c.protocol}]
    assert events(c.nft, "LienSet", receipt) == [{"token_id": 1, "active": False}]
    # and it cannot be foreclosed again
    with reverts("CaliberNFT: already in custody"):
        send(c.nft.functions.foreclose(1), c.loan_manager)


# ---------------------------------------------------------------- USDai


def test_usdai_metadata(c):
    assert c.usdai.functions.name().call() == "USDai"
    assert c.usdai.functions.symbol().call() == "USDai"
    assert c.usdai.functions.decimals().call() == 18
    assert c.usdai.functions.is_minter(c.vault.address).call() is True


def test_usdai_mint_and_burn_are_for_minters_only(c):
    # a holder cannot mint, nor burn even their own tokens
    with reverts("erc20: access is denied"):
        send(c.usdai.functions.mint(c.stranger, WAD), c.stranger)
    with reverts("USDai: caller is not a minter"):
        send(c.usdai.functions.burn(WAD), c.alice)
    send(c.usdai.functions.approve(c.bob, 10 * WAD), c.alice)
    with reverts("USDai: caller is not a minter"):
        send(c.usdai.functions.burn_from(c.alice, WAD), c.bob)
    # nor make themselves a minter
    with reverts("ownable: caller is not the owner"):
        send(c.usdai.functions.set_minter(c.stranger, True), c.stranger)


def test_usdai_minter_burns_own_and_approved_tokens(c):
    supply = c.usdai.functions.totalSupply().call()
    # given the admin (owner and minter) holds 100 and alice approved it for 30
    send(c.usdai.functions.mint(c.admin, 100 * WAD), c.admin)
    send(c.usdai.functions.approve(c.admin, 30 * WAD), c.alice)

    # when it burns 40 of its own and 25 of alice's
    send(c.usdai.functions.burn(40 * WAD), c.admin)
    send(c.usdai.functions.burn_from(c.alice, 25 * WAD), c.admin)

    # then balances, allowance and supply follow
    assert c.usdai.functions.balanceOf(c.admin).call() == 60 * WAD
    assert c.usdai.functions.balanceOf(c.alice).call() == 999_975 * WAD
    assert c.usdai.functions.allowance(c.alice, c.admin).call() == 5 * WAD
    assert c.usdai.functions.totalSupply().call() == supply + 100 * WAD - 65 * WAD
    with reverts("erc20: insufficient allowance"):
        send(c.usdai.functions.burn_from(c.alice, 6 * WAD), c.admin)


# ---------------------------------------------------------------- sUSDai


def test_vault_metadata(c):
    assert c.vault.functions.name().call() == "Staked USDai"
    assert c.vault.functions.symbol().call() == "sUSDai"
    assert c.vault.functions.decimals().call() == 18
    assert c.vault.functions.asset().call() == c.usdai.address
    assert c.vault.functions.unlock_period().call() == UNLOCK
    assert c.vault.functions.min_redemption().call() == MIN_REDEMPTION


def test_first_deposit_mints_dead_shares(c):
    # a first deposit must exceed 10**6 wei
    with reverts("sUSDai: first deposit must exceed 10**6 wei"):
        send(c.vault.functions.deposit(DEAD_SHARES, c.alice), c.alice)
    assert c.vault.functions.previewDeposit(1_000 * WAD).call() == 1_000 * WAD - DEAD_SHARES

    # when alice deposits 1,000
    receipt = send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)

    # then 10**6 shares are dead, the rest is alice's: one share per wei
    assert c.vault.functions.balanceOf(DEAD).call() == DEAD_SHARES
    assert c.vault.functions.balanceOf(c.alice).call() == 1_000 * WAD - DEAD_SHARES
    assert c.vault.functions.totalSupply().call() == 1_000 * WAD
    assert c.vault.functions.idle().call() == 1_000 * WAD
    assert c.vault.functions.totalAssets().call() == 1_000 * WAD
    assert c.usdai.functions.balanceOf(c.vault.address).call() == 1_000 * WAD
    assert events(c.vault, "Deposit", receipt) == [
        {"sender": c.alice, "owner": c.alice, "assets": 1_000 * WAD, "shares": 1_000 * WAD - DEAD_SHARES}
    ]


def test_a_first_deposit_neither_pays_for_nor_takes_assets_booked_before_it(c):
    # given interest reported to the empty vault, and unlocked: assets that no share stands for
    send(c.vault.functions.report(WAD + WAD // 6, 0, 0, AT_BLOCK), c.operator)
    travel(c, c.vault.functions.unlock_end().call() + 1)
    orphan = pending(c.vault.functions.totalAssets())
    assert orphan == WAD + WAD // 6 and c.vault.functions.totalSupply().call() == 0

    # when alice makes the first deposit, of 50,000
    assert pending(c.vault.functions.previewDeposit(50_000 * WAD)) == 50_000 * WAD - DEAD_SHARES
    send(c.vault.functions.deposit(50_000 * WAD, c.alice), c.alice)

    # then she holds what she paid in (less the dead shares' 10**6 wei), not 1.17 less, nor 1.17 more:
    # the dead shares stand for the assets that were there before her
    assert c.vault.functions.balanceOf(c.alice).call() == 50_000 * WAD - DEAD_SHARES
    assert value_of(c, c.alice) == 50_000 * WAD - DEAD_SHARES
    assert c.vault.functions.balanceOf(DEAD).call() == DEAD_SHARES + orphan
    assert value_of(c, DEAD) == DEAD_SHARES + orphan
    # and the same holds when the first shares are minted rather than deposited for
    assert c.vault.functions.convertToAssets(WAD).call() == WAD


def test_mint_charges_the_preview(c):
    # the first mint pays for the dead shares too; the receiver gets exactly what it asked
    assert c.vault.functions.previewMint(500 * WAD).call() == 500 * WAD + DEAD_SHARES
    send(c.vault.functions.mint(500 * WAD, c.bob), c.alice)
    assert c.vault.functions.balanceOf(c.bob).call() == 500 * WAD
    assert c.usdai.functions.balanceOf(c.alice).call() == 999_500 * WAD - DEAD_SHARES
    # a later mint at a price of 1 costs as many assets as shares
    send(c.vault.functions.mint(100 * WAD, c.carol), c.carol)
    assert c.vault.functions.balanceOf(c.carol).call() == 100 * WAD
    assert c.vault.functions.idle().call() == 600 * WAD + DEAD_SHARES


def test_inflation_attack_does_not_steal_from_the_second_depositor(c):
    attacker_start = c.usdai.functions.balanceOf(c.attacker).call()
    # given the attacker makes the smallest first deposit, then donates 100,000 directly to the vault
    send(c.vault.functions.deposit(DEAD_SHARES + 1, c.attacker), c.attacker)
    assert c.vault.functions.balanceOf(c.attacker).call() == 1
    send(c.usdai.functions.transfer(c.vault.address, 100_000 * WAD), c.attacker)
    # the donation is not counted
    assert c.vault.functions.totalAssets().call() == DEAD_SHARES + 1

    # when the victim deposits 1,000
    send(c.vault.functions.deposit(1_000 * WAD, c.bob), c.bob)

    # then the victim got one share per wei and can redeem exactly their deposit
    bob_shares = c.vault.functions.balanceOf(c.bob).call()
    assert bob_shares == 1_000 * WAD
    assert c.vault.functions.previewRedeem(bob_shares).call() == 1_000 * WAD
    send(c.vault.functions.request_redeem(bob_shares), c.bob)
    send(c.vault.functions.service(1), c.operator)
    assert c.usdai.functions.balanceOf(c.bob).call() == 1_000_000 * WAD
    # and the attacker ends with less than they put in: their one share is worth one wei
    assert c.vault.functions.previewRedeem(1).call() == 1
    attacker_end = c.usdai.functions.balanceOf(c.attacker).call() + c.vault.functions.previewRedeem(1).call()
    assert attacker_end == attacker_start - 100_000 * WAD - DEAD_SHARES
    assert attacker_end < attacker_start


def test_profit_streams_linearly_and_the_price_never_jumps(c):
    # given alice's 1,000 in the vault
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    price_before = pending(c.vault.functions.convertToAssets(WAD))
    assert price_before == WAD

    # when the operator reports a profit of 100 (no accrual)
    receipt = send(c.vault.functions.report(100 * WAD, 0, 0, AT_BLOCK), c.operator)
    t0 = c.vault.functions.locked_at().call()

    # then all of it is a gain, locked to unlock over one period: total assets and the share price do not move
    assert events(c.vault, "Reported", receipt) == [
        {"profit": 100 * WAD, "accrued": 0, "rate": 0, "gain": 100 * WAD, "loss": 0, "locked": 100 * WAD}
    ]
    assert c.vault.functions.unlock_end().call() == t0 + UNLOCK
    assert c.vault.functions.idle().call() == 1_100 * WAD
    assert c.vault.functions.locked_profit().call() == 100 * WAD
    assert c.vault.functions.totalAssets().call() == 1_000 * WAD
    assert c.vault.functions.convertToAssets(WAD).call() == price_before

    # and it unlocks linearly: a quarter, half, three quarters, all
    supply = c.vault.functions.totalSupply().call()
    prices = [price_before]
    for quarter in (1, 2, 3, 4):
        travel(c, t0 + UNLOCK * quarter // 4)
        assert pending(c.vault.functions.locked_profit()) == 100 * WAD * (4 - quarter) // 4
        assert pending(c.vault.functions.totalAssets()) == 1_000 * WAD + 25 * WAD * quarter
        prices.append(pending(c.vault.functions.convertToAssets(WAD)))
        assert prices[-1] == WAD * (1_000 * WAD + 25 * WAD * quarter + 1) // (supply + 1)
    steps = [b - a for a, b in pairwise(prices)]
    assert min(steps) > 0
    assert max(steps) - min(steps) <= 1  # equal steps: the price rises smoothly, it never jumps
    # and nothing is locked after the period
    travel(c, t0 + 2 * UNLOCK)
    assert pending(c.vault.functions.totalAssets()) == 1_100 * WAD


def test_a_second_gain_unlocks_by_the_weighted_average_end(c):
    # given 100 locked at t0, half unlocked by t1
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    send(c.vault.functions.report(100 * WAD, 0, 0, AT_BLOCK), c.operator)
    t1 = c.vault.functions.locked_at().call() + UNLOCK // 2
    travel(c, t1)
    assert pending(c.vault.functions.totalAssets()) == 1_050 * WAD

    # when 60 more is reported at t1
    receipt = send(c.vault.functions.report(60 * WAD, 0, 0, AT_BLOCK), c.operator)

    # then 50 + 60 is locked, total assets did not jump, and the lock ends at the weighted average:
    # t1 + (50 * UNLOCK / 2 + 60 * UNLOCK) / 110, not a fresh full period after t1
    end = t1 + (50 * (UNLOCK // 2) + 60 * UNLOCK) // 110
    assert end == t1 + 467_345
    assert events(c.vault, "Reported", receipt)[0]["locked"] == 110 * WAD
    assert vault_lock(c) == (110 * WAD, t1, end)
    assert c.vault.functions.totalAssets().call() == 1_050 * WAD
    # halfway to the end, half of the 110 is still locked (rounded up); at the end, nothing
    travel(c, t1 + (end - t1) // 2)
    assert pending(c.vault.functions.locked_profit()) == ceil_div(110 * WAD * (end - t1 - (end - t1) // 2), end - t1)
    travel(c, end)
    assert pending(c.vault.functions.locked_profit()) == 0
    assert pending(c.vault.functions.totalAssets()) == 1_160 * WAD


def test_linear_unlocking_under_hourly_zero_gain_reports(c):
    # given one gain of 168 at t0
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    t0 = now(c)
    travel(c, t0)
    send(c.vault.functions.report(168 * WAD, 0, 0, AT_BLOCK), c.operator)

    # when the operator reports every hour for a week with nothing new
    for hour in range(1, 169):
        travel(c, t0 + 3600 * hour)
        receipt = send(c.vault.functions.report(0, 0, 0, AT_BLOCK), c.operator)

        # then the lock follows the straight line from 168 at t0 to 0 at t0 + UNLOCK (1 per hour)
        assert events(c.vault, "Reported", receipt)[0]["locked"] == (168 - hour) * WAD
        assert c.vault.functions.locked_profit().call() == (168 - hour) * WAD
        assert c.vault.functions.unlock_end().call() == t0 + UNLOCK
    # and it is all unlocked at the end
    assert c.vault.functions.totalAssets().call() == 1_168 * WAD


def test_hourly_equal_gains_are_fully_unlocked_one_period_after_the_last(c):
    # given alice's 1,000
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    t0 = now(c)
    state = (0, 0, 0)

    # when a profit of 1 is reported every hour for a week
    for hour in range(168):
        t = t0 + 3600 * hour
        travel(c, t)
        send(c.vault.functions.report(WAD, 0, 0, AT_BLOCK), c.operator)
        state = lock_after_gain(state, t, WAD)

        # then each gain joins the lock with the weighted-average end
        assert vault_lock(c) == state
    last = t0 + 3600 * 167
    assert state[2] <= last + UNLOCK

    # and one period after the last report everything is unlocked (a re-lock over a fresh period
    # each hour would still hold a third of it)
    travel(c, last + UNLOCK)
    assert pending(c.vault.functions.locked_profit()) == 0
    assert pending(c.vault.functions.totalAssets()) == 1_168 * WAD


def test_accrued_interest_streams_at_the_reported_rate(c):
    # given alice's 1,000 and a report of nothing received, nothing accrued yet, accruing 0.001 per second
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    rate = 10**15
    receipt = send(c.vault.functions.report(0, 0, rate, AT_BLOCK), c.operator)
    t0 = c.vault.functions.accrued_at().call()
    assert events(c.vault, "Reported", receipt) == [
        {"profit": 0, "accrued": 0, "rate": rate, "gain": 0, "loss": 0, "locked": 0}
    ]
    assert c.vault.functions.accrual_rate().call() == rate

    # then the NAV rises by the rate, second by second
    travel(c, t0 + 1_000)
    assert pending(c.vault.functions.accrued()) == WAD
    assert pending(c.vault.functions.totalAssets()) == 1_001 * WAD

    # when the interest arrives as expected (1 received, nothing left accrued)
    receipt = send(c.vault.functions.report(WAD, 0, rate, AT_BLOCK), c.operator)

    # then nothing moves: no gain, no loss, nothing locked
    assert events(c.vault, "Reported", receipt) == [
        {"profit": WAD, "accrued": 0, "rate": rate, "gain": 0, "loss": 0, "locked": 0}
    ]
    assert c.vault.functions.idle().call() == 1_001 * WAD
    assert c.vault.functions.accrued().call() == 0
    assert c.vault.functions.totalAssets().call() == 1_001 * WAD

    # when, 1,000 seconds on, the interest expected does not come
    travel(c, t0 + 2_000)
    receipt = send(c.vault.functions.report(0, 0, 0, AT_BLOCK), c.operator)

    # then the shortfall is a loss (nothing locked to absorb it): the NAV falls back
    assert events(c.vault, "Reported", receipt) == [
        {"profit": 0, "accrued": 0, "rate": 0, "gain": 0, "loss": WAD, "locked": 0}
    ]
    assert c.vault.functions.totalAssets().call() == 1_001 * WAD


def test_a_report_counts_the_seconds_between_the_books_closing_and_its_block(c):
    # given a vault earning 10**12 wei a second since a report at t0
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    t0 = c.tester.get_block_by_number("latest")["timestamp"] + 10
    travel(c, t0)
    rate = 10**12
    send(c.vault.functions.report(0, 0, rate, AT_BLOCK), c.operator)
    # when the books close an hour later with exactly what accrued, and the report is mined 90 s after that
    closed = t0 + 3_600
    travel(c, closed + 90)
    receipt = send(c.vault.functions.report(0, rate * 3_600, rate, closed), c.operator)
    # then nothing was a surprise and nothing a loss: the 90 s count at the rate, from the books' close
    (event,) = events(c.vault, "Reported", receipt)
    assert (event["gain"], event["loss"]) == (0, 0)
    assert c.vault.functions.accrued_at().call() == closed
    travel(c, closed + 100)
    assert pending(c.vault.functions.accrued()) == rate * (3_600 + 100)
    # and a report "as of" a moment after its block counts as of the block
    travel(c, closed + 200)
    receipt = send(c.vault.functions.report(0, rate * (3_600 + 200), rate, closed + 10_000), c.operator)
    assert c.vault.functions.accrued_at().call() == closed + 200
    (event,) = events(c.vault, "Reported", receipt)
    assert (event["gain"], event["loss"]) == (0, 0)


def test_a_report_shortfall_is_absorbed_by_locked_profit_first(c):
    # given 100 of accrued interest reported as a surprise (locked), half unlocked
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    send(c.vault.functions.report(0, 100 * WAD, 0, AT_BLOCK), c.operator)
    t0 = c.vault.functions.locked_at().call()
    assert c.vault.functions.totalAssets().call() == 1_000 * WAD
    travel(c, t0 + UNLOCK // 2)
    assert pending(c.vault.functions.totalAssets()) == 1_050 * WAD

    # when the next report says only 20 is accrued (80 short)
    receipt = send(c.vault.functions.report(0, 20 * WAD, 0, AT_BLOCK), c.operator)

    # then the 50 still locked absorbs 50 and the other 30 lowers the NAV
    assert events(c.vault, "Reported", receipt) == [
        {"profit": 0, "accrued": 20 * WAD, "rate": 0, "gain": 0, "loss": 80 * WAD, "locked": 0}
    ]
    assert c.vault.functions.locked_profit().call() == 0
    assert c.vault.functions.totalAssets().call() == 1_020 * WAD


def test_deposit_price_equals_redeem_price(c):
    # given alice's 1,000, 100 of interest accrued (a locked surprise, half unlocked) and accrual running
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    rate = 10**12
    send(c.vault.functions.report(0, 100 * WAD, rate, AT_BLOCK), c.operator)
    t0 = c.vault.functions.accrued_at().call()
    t1 = t0 + UNLOCK // 2
    travel(c, t1)
    nav = 1_050 * WAD + rate * (UNLOCK // 2)
    assert pending(c.vault.functions.accrued()) == 100 * WAD + rate * (UNLOCK // 2)
    assert pending(c.vault.functions.locked_profit()) == 50 * WAD
    assert pending(c.vault.functions.totalAssets()) == nav
    supply = 1_000 * WAD
    alice_before = pending(c.vault.functions.convertToAssets(1_000 * WAD - DEAD_SHARES))

    # when bob deposits 1,000 for carol and, in the same block, carol asks to redeem it all and is serviced
    expected = 1_000 * WAD * (supply + 1) // (nav + 1)
    assert pending(c.vault.functions.previewDeposit(1_000 * WAD)) == expected
    assert pending(c.vault.functions.convertToShares(1_000 * WAD)) == expected
    with OneBlock(c) as block:
        block.send(c.vault.functions.deposit(1_000 * WAD, c.carol), c.bob)
        block.send(c.vault.functions.request_redeem(expected), c.carol)
        block.send(c.vault.functions.service(1), c.operator)

    # then carol got back what bob paid in, less rounding (the one NAV prices both ways)
    paid = events(c.vault, "RedeemServiced", block.receipts[2])[0]["assets"]
    assert paid == expected * (nav + 1_000 * WAD + 1) // (supply + expected + 1)
    assert 1_000 * WAD - 2 <= paid <= 1_000 * WAD
    # and alice's holding lost nothing to either
    assert alice_before <= value_of(c, c.alice) <= alice_before + 2


def _report_and_deposit(c, t1, rate, *, deposit_first):
    with OneBlock(c) as block:
        report = (c.vault.functions.report(rate * 3_600 + 40 * WAD, 5 * WAD, rate, AT_BLOCK), c.operator)
        deposit = (c.vault.functions.deposit(500 * WAD, c.bob), c.bob)
        for fn, sender in (deposit, report) if deposit_first else (report, deposit):
            block.send(fn, sender)
    assert c.w3.eth.get_block(block.receipts[0].blockNumber).timestamp == t1
    shares = c.vault.functions.balanceOf(c.bob).call()
    right_after = (value_of(c, c.alice), value_of(c, c.bob))
    travel(c, t1 + UNLOCK)
    return shares, right_after, (value_of(c, c.alice, "pending"), value_of(c, c.bob, "pending"))


def test_depositing_just_before_or_just_after_a_report_moves_no_value(c):
    # given alice's 1,000 accruing 0.0001 per second, an hour after the last report
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    rate = 10**14
    send(c.vault.functions.report(0, 0, rate, AT_BLOCK), c.operator)
    t1 = c.vault.functions.accrued_at().call() + 3_600
    travel(c, t1)
    alice_at_t1 = pending(c.vault.functions.convertToAssets(1_000 * WAD - DEAD_SHARES))
    assert alice_at_t1 == (1_000 * WAD - DEAD_SHARES) * (1_000 * WAD + rate * 3_600 + 1) // (1_000 * WAD + 1)
    snapshot = c.tester.take_snapshot()

    # when bob deposits 500 just before a report with a 45 surprise (the hour's interest, 40 more, 5 accrued) ...
    before = _report_and_deposit(c, t1, rate, deposit_first=True)
    c.tester.revert_to_snapshot(snapshot)
    # ... or just after it
    after = _report_and_deposit(c, t1, rate, deposit_first=False)

    # then he gets the same shares, and both lenders hold the same values then and after the unlock
    (shares_before, (alice_now_b, bob_now_b), (alice_end_b, bob_end_b)) = before
    (shares_after, (alice_now_a, bob_now_a), (alice_end_a, bob_end_a)) = after
    assert abs(shares_before - shares_after) <= 1
    for x, y in (
        (alice_now_b, alice_now_a),
        (bob_now_b, bob_now_a),
        (alice_end_b, alice_end_a),
        (bob_end_b, bob_end_a),
    ):
        assert abs(x - y) <= 2
    # and neither gained from the other: right after, alice holds what she had, bob what he paid
    assert abs(alice_now_b - alice_at_t1) <= 2
    assert 500 * WAD - 2 <= bob_now_b <= 500 * WAD
    # and the 45 streams to both pro rata (plus the week's accrual)
    assert bob_end_b > 500 * WAD and alice_end_b > alice_at_t1


def test_write_down_is_absorbed_by_locked_profit_then_shared_pro_rata(c):
    # given alice and bob with 1,000 each, 1,000 deployed, 100 of profit half unlocked (50 locked)
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    send(c.vault.functions.deposit(1_000 * WAD, c.bob), c.bob)
    send(c.vault.functions.deploy(1_000 * WAD), c.operator)
    send(c.vault.functions.report(100 * WAD, 0, 0, AT_BLOCK), c.operator)
    t0 = c.vault.functions.locked_at().call()
    travel(c, t0 + UNLOCK // 2)

    # when 30 is written down
    receipt = send(c.vault.functions.write_down(30 * WAD), c.operator)

    # then the locked profit absorbs it all: the NAV does not move, the lock keeps its end
    assert events(c.vault, "WrittenDown", receipt) == [
        {"amount": 30 * WAD, "absorbed_by_locked": 30 * WAD, "deployed": 970 * WAD}
    ]
    assert c.vault.functions.deployed().call() == 970 * WAD
    assert vault_lock(c) == (20 * WAD, t0 + UNLOCK // 2, t0 + UNLOCK)
    assert c.vault.functions.totalAssets().call() == 2_050 * WAD

    # given bob asks to redeem everything
    bob_shares = c.vault.functions.balanceOf(c.bob).call()
    alice_shares = c.vault.functions.balanceOf(c.alice).call()
    travel(c, t0 + UNLOCK // 2 + 100)
    send(c.vault.functions.request_redeem(bob_shares), c.bob)

    # when 200 more is written down
    t2 = t0 + UNLOCK // 2 + 200
    travel(c, t2)
    still_locked = ceil_div(20 * WAD * (UNLOCK // 2 - 200), UNLOCK // 2)
    nav_before = pending(c.vault.functions.totalAssets())
    assert nav_before == 2_100 * WAD - 30 * WAD - still_locked
    supply = c.vault.functions.totalSupply().call()
    alice_before = alice_shares * (nav_before + 1) // (supply + 1)
    bob_before = bob_shares * (nav_before + 1) // (supply + 1)
    receipt = send(c.vault.functions.write_down(200 * WAD), c.operator)

    # then what is still locked absorbs its part, the rest lowers the NAV
    assert events(c.vault, "WrittenDown", receipt) == [
        {"amount": 200 * WAD, "absorbed_by_locked": still_locked, "deployed": 770 * WAD}
    ]
    nav = nav_before - (200 * WAD - still_locked)
    assert c.vault.functions.locked_profit().call() == 0
    assert c.vault.functions.totalAssets().call() == nav
    alice_after = value_of(c, c.alice)
    assert alice_after == alice_shares * (nav + 1) // (supply + 1)

    # and when the queue is serviced, bob is paid at the written-down price, not his earlier value
    receipt = send(c.vault.functions.service(10), c.operator)
    paid = events(c.vault, "RedeemServiced", receipt)[0]["assets"]
    assert paid == bob_shares * (nav + 1) // (supply + 1)
    assert paid < bob_before
    # so both lost the same fraction of what they held
    assert abs(alice_after * bob_before - paid * alice_before) <= alice_before + bob_before
    assert abs(value_of(c, c.alice) - alice_after) <= 1


def test_write_up_is_locked_and_streams(c):
    # given alice's 1,000 of which 500 is deployed
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    send(c.vault.functions.deploy(500 * WAD), c.operator)

    # when 100 of an earlier impairment is recovered, and bob deposits 1,000 in the same block
    t = now(c)
    travel(c, t)
    with OneBlock(c) as block:
        block.send(c.vault.functions.write_up(100 * WAD), c.operator)
        block.send(c.vault.functions.deposit(1_000 * WAD, c.bob), c.bob)

    # then the recovery is locked: the NAV did not jump, and bob paid one per share
    assert events(c.vault, "WrittenUp", block.receipts[0]) == [
        {"amount": 100 * WAD, "deployed": 600 * WAD, "locked": 100 * WAD}
    ]
    assert c.vault.functions.deployed().call() == 600 * WAD
    assert vault_lock(c) == (100 * WAD, t, t + UNLOCK)
    assert c.vault.functions.balanceOf(c.bob).call() == 1_000 * WAD
    assert c.vault.functions.totalAssets().call() == 2_000 * WAD
    # and it streams in over the period
    travel(c, t + UNLOCK // 2)
    assert pending(c.vault.functions.totalAssets()) == 2_050 * WAD
    travel(c, t + UNLOCK)
    assert pending(c.vault.functions.totalAssets()) == 2_100 * WAD


def test_write_down_limits(c):
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    send(c.vault.functions.deploy(100 * WAD), c.operator)
    with reverts("sUSDai: not enough deployed"):
        send(c.vault.functions.write_down(100 * WAD + 1), c.operator)
    # a write-down with nothing locked falls on the holders at once
    receipt = send(c.vault.functions.write_down(100 * WAD), c.operator)
    assert events(c.vault, "WrittenDown", receipt) == [{"amount": 100 * WAD, "absorbed_by_locked": 0, "deployed": 0}]
    assert c.vault.functions.totalAssets().call() == 900 * WAD


def test_max_deposit_and_mint_refuse_the_vault_itself(c):
    vault = c.vault.address
    assert c.vault.functions.maxDeposit(vault).call() == 0
    assert c.vault.functions.maxMint(vault).call() == 0
    assert c.vault.functions.maxDeposit(c.alice).call() == MAX_UINT
    assert c.vault.functions.maxMint(c.alice).call() == MAX_UINT
    with reverts("sUSDai: receiver is the vault"):
        send(c.vault.functions.deposit(1_000 * WAD, vault), c.alice)
    assert c.vault.functions.totalSupply().call() == 0


def test_withdraw_and_redeem_point_to_the_queue(c):
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    assert c.vault.functions.maxWithdraw(c.alice).call() == 0
    assert c.vault.functions.maxRedeem(c.alice).call() == 0
    with reverts("sUSDai: use the redemption queue"):
        send(c.vault.functions.withdraw(WAD, c.alice, c.alice), c.alice)
    with reverts("sUSDai: use the redemption queue"):
        send(c.vault.functions.redeem(WAD, c.alice, c.alice), c.alice)


def test_fifo_redemption_queue(c):
    # given 2,000 in the vault (alice 1,000, bob 500, carol 500) of which 1,700 is deployed
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    send(c.vault.functions.deposit(500 * WAD, c.bob), c.bob)
    send(c.vault.functions.deposit(500 * WAD, c.carol), c.carol)
    send(c.vault.functions.deploy(1_700 * WAD), c.operator)
    assert c.vault.functions.idle().call() == 300 * WAD

    # when bob, carol and alice ask to redeem 200, 200 and 100 shares
    receipt = send(c.vault.functions.request_redeem(200 * WAD), c.bob)
    send(c.vault.functions.request_redeem(200 * WAD), c.carol)
    send(c.vault.functions.request_redeem(100 * WAD), c.alice)

    # then the shares are escrowed, in order
    assert events(c.vault, "RedeemRequested", receipt) == [{"id": 0, "owner": c.bob, "shares": 200 * WAD}]
    assert c.vault.functions.balanceOf(c.bob).call() == 300 * WAD
    assert c.vault.functions.balanceOf(c.vault.address).call() == 500 * WAD
    assert c.vault.functions.queued_shares().call() == 500 * WAD
    assert (c.vault.functions.queue_head().call(), c.vault.functions.queue_tail().call()) == (0, 3)
    assert [c.vault.functions.position(i).call() for i in range(3)] == [0, 1, 2]

    # when the operator services with 300 idle
    assert c.vault.functions.service(10).call({"from": c.operator}) == 1
    receipt = send(c.vault.functions.service(10), c.operator)

    # then bob is paid in full, carol in part (100 of 200), alice waits
    assert events(c.vault, "RedeemServiced", receipt) == [
        {"id": 0, "owner": c.bob, "shares": 200 * WAD, "assets": 200 * WAD, "remaining_shares": 0},
        {"id": 1, "owner": c.carol, "shares": 100 * WAD, "assets": 100 * WAD, "remaining_shares": 100 * WAD},
    ]
    assert c.vault.functions.redemptions(0).call() == (c.bob, 0, 200 * WAD, False)
    assert c.vault.functions.redemptions(1).call() == (c.carol, 100 * WAD, 100 * WAD, False)
    assert c.vault.functions.redemptions(2).call() == (c.alice, 100 * WAD, 0, False)
    assert c.usdai.functions.balanceOf(c.bob).call() == 999_700 * WAD
    assert c.usdai.functions.balanceOf(c.carol).call() == 999_600 * WAD
    assert c.vault.functions.idle().call() == 0
    assert c.vault.functions.totalSupply().call() == 1_700 * WAD
    assert c.vault.functions.queued_shares().call() == 200 * WAD
    assert c.vault.functions.queue_head().call() == 1
    assert [c.vault.functions.position(i).call() for i in (1, 2)] == [0, 1]
    with reverts("sUSDai: request completed"):
        c.vault.functions.position(0).call()
    with reverts("sUSDai: unknown request"):
        c.vault.functions.position(3).call()

    # when 300 is recalled and the queue serviced again
    send(c.vault.functions.recall(300 * WAD), c.operator)
    receipt = send(c.vault.functions.service(10), c.operator)

    # then carol's rest and alice are paid, and the queue is empty
    assert [(e["id"], e["assets"], e["remaining_shares"]) for e in events(c.vault, "RedeemServiced", receipt)] == [
        (1, 100 * WAD, 0),
        (2, 100 * WAD, 0),
    ]
    assert c.vault.functions.redemptions(1).call() == (c.carol, 0, 200 * WAD, False)
    assert c.vault.functions.queue_head().call() == 3
    assert c.vault.functions.queued_shares().call() == 0
    assert c.vault.functions.balanceOf(c.vault.address).call() == 0
    assert c.vault.functions.idle().call() == 100 * WAD
    assert c.vault.functions.totalAssets().call() == 1_500 * WAD
    assert c.vault.functions.totalSupply().call() == 1_500 * WAD


def test_service_respects_max_requests_and_pays_at_the_current_price(c):
    # given 1,000 plus 100 of fully unlocked profit, and two requests of 100 shares
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    send(c.vault.functions.report(100 * WAD, 0, 0, AT_BLOCK), c.operator)
    travel(c, c.vault.functions.unlock_end().call())
    send(c.vault.functions.request_redeem(100 * WAD), c.alice)
    send(c.vault.functions.request_redeem(100 * WAD), c.alice)
    supply = 1_000 * WAD

    # when one request is serviced
    receipt = send(c.vault.functions.service(1), c.operator)

    # then only the first is paid, at 1.1 per share (rounded down)
    paid = 100 * WAD * (1_100 * WAD + 1) // (supply + 1)
    assert events(c.vault, "RedeemServiced", receipt)[0]["assets"] == paid
    assert c.vault.functions.queue_head().call() == 1
    assert c.vault.functions.idle().call() == 1_100 * WAD - paid


def test_redemption_requests_limits(c):
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    with reverts("sUSDai: below minimum"):
        send(c.vault.functions.request_redeem(MIN_REDEMPTION - 1), c.alice)
    with reverts("sUSDai: exceeds balance"):
        send(c.vault.functions.request_redeem(1_000 * WAD), c.alice)
    with reverts("sUSDai: exceeds balance"):
        send(c.vault.functions.request_redeem(MIN_REDEMPTION), c.bob)
    # the admin can lower the minimum; others cannot
    with reverts(MISSING_ROLE):
        send(c.vault.functions.set_min_redemption(1), c.operator)
    send(c.vault.functions.set_min_redemption(1), c.admin)
    assert c.vault.functions.min_redemption().call() == 1
    send(c.vault.functions.request_redeem(1), c.alice)
    assert c.vault.functions.queued_shares().call() == 1


def test_a_whole_balance_below_the_minimum_can_exit(c):
    # given carol holds half a share, below the 1-share minimum
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    send(c.vault.functions.deposit(WAD // 2, c.carol), c.carol)
    assert c.vault.functions.balanceOf(c.carol).call() == WAD // 2

    # then she cannot queue part of it, but she can queue all of it
    with reverts("sUSDai: below minimum"):
        send(c.vault.functions.request_redeem(WAD // 2 - 1), c.carol)
    receipt = send(c.vault.functions.request_redeem(WAD // 2), c.carol)
    assert events(c.vault, "RedeemRequested", receipt) == [{"id": 0, "owner": c.carol, "shares": WAD // 2}]
    send(c.vault.functions.service(1), c.operator)
    assert c.vault.functions.balanceOf(c.carol).call() == 0
    assert c.usdai.functions.balanceOf(c.carol).call() == 1_000_000 * WAD
    # while a holder above the minimum still cannot queue less than it
    with reverts("sUSDai: below minimum"):
        send(c.vault.functions.request_redeem(MIN_REDEMPTION - 1), c.alice)


def test_cancel_redeem_returns_the_shares_and_service_skips_it(c):
    # given three requests: bob 100 (#0), alice 200 (#1), bob 50 (#2)
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    send(c.vault.functions.deposit(500 * WAD, c.bob), c.bob)
    send(c.vault.functions.request_redeem(100 * WAD), c.bob)
    send(c.vault.functions.request_redeem(200 * WAD), c.alice)
    send(c.vault.functions.request_redeem(50 * WAD), c.bob)
    alice_shares = 1_000 * WAD - DEAD_SHARES

    # then only alice can cancel hers, and an unknown request cannot be cancelled
    for sender in (c.stranger, c.bob, c.operator):
        with reverts("sUSDai: not the request's owner"):
            send(c.vault.functions.cancel_redeem(1), sender)
    with reverts("sUSDai: unknown request"):
        send(c.vault.functions.cancel_redeem(3), c.alice)
    assert c.vault.functions.queued_shares().call() == 350 * WAD
    assert c.vault.functions.redemptions(1).call() == (c.alice, 200 * WAD, 0, False)

    # when alice cancels
    receipt = send(c.vault.functions.cancel_redeem(1), c.alice)

    # then her shares are back, the request is empty and marked cancelled
    assert events(c.vault, "RedeemCancelled", receipt) == [{"id": 1, "owner": c.alice, "shares": 200 * WAD}]
    assert c.vault.functions.balanceOf(c.alice).call() == alice_shares
    assert c.vault.functions.balanceOf(c.vault.address).call() == 150 * WAD
    assert c.vault.functions.queued_shares().call() == 150 * WAD
    assert c.vault.functions.redemptions(1).call() == (c.alice, 0, 0, True)
    with reverts("sUSDai: request cancelled"):
        c.vault.functions.position(1).call()
    with reverts("sUSDai: request cancelled"):
        send(c.vault.functions.cancel_redeem(1), c.alice)
    assert c.vault.functions.position(2).call() == 2  # the cancelled entry still counts until skipped

    # when the operator services one request, then one more
    assert c.vault.functions.service(1).call({"from": c.operator}) == 1
    first = send(c.vault.functions.service(1), c.operator)
    assert c.vault.functions.service(1).call({"from": c.operator}) == 1
    second = send(c.vault.functions.service(1), c.operator)

    # then #0 is paid, then #1 is skipped (not counted, no event) and #2 paid
    assert [e["id"] for e in events(c.vault, "RedeemServiced", first)] == [0]
    assert [(e["id"], e["assets"]) for e in events(c.vault, "RedeemServiced", second)] == [(2, 50 * WAD)]
    assert c.vault.functions.queue_head().call() == 3
    assert c.vault.functions.queued_shares().call() == 0
    assert c.vault.functions.redemptions(1).call() == (c.alice, 0, 0, True)
    assert c.vault.functions.totalSupply().call() == 1_350 * WAD
    # and a completed request cannot be cancelled
    with reverts("sUSDai: request completed"):
        send(c.vault.functions.cancel_redeem(0), c.bob)


def test_a_partly_paid_request_can_be_cancelled(c):
    # given bob's request of 300 paid 100 (idle ran short)
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    send(c.vault.functions.deposit(1_000 * WAD, c.bob), c.bob)
    send(c.vault.functions.deploy(1_900 * WAD), c.operator)
    send(c.vault.functions.request_redeem(300 * WAD), c.bob)
    send(c.vault.functions.service(1), c.operator)
    assert c.vault.functions.redemptions(0).call() == (c.bob, 200 * WAD, 100 * WAD, False)

    # when he cancels
    receipt = send(c.vault.functions.cancel_redeem(0), c.bob)

    # then the unpaid 200 shares are his again and the 100 paid stays paid
    assert events(c.vault, "RedeemCancelled", receipt) == [{"id": 0, "owner": c.bob, "shares": 200 * WAD}]
    assert c.vault.functions.balanceOf(c.bob).call() == 900 * WAD
    assert c.usdai.functions.balanceOf(c.bob).call() == 999_100 * WAD
    assert c.vault.functions.redemptions(0).call() == (c.bob, 0, 100 * WAD, True)
    assert c.vault.functions.queued_shares().call() == 0
    # and the next service moves the head past it, paying nothing
    send(c.vault.functions.recall(500 * WAD), c.operator)
    assert c.vault.functions.service(10).call({"from": c.operator}) == 0
    receipt = send(c.vault.functions.service(10), c.operator)
    assert events(c.vault, "RedeemServiced", receipt) == []
    assert c.vault.functions.queue_head().call() == 1
    assert c.vault.functions.idle().call() == 500 * WAD


def test_deploy_and_recall_move_idle_deployed_and_usdai_supply(c):
    # given 1,000 idle
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    supply = c.usdai.functions.totalSupply().call()

    # when 600 is deployed
    receipt = send(c.vault.functions.deploy(600 * WAD), c.operator)

    # then the USDai is burnt and the book value moves to deployed
    assert events(c.vault, "Deployed", receipt) == [{"amount": 600 * WAD, "deployed": 600 * WAD}]
    assert (c.vault.functions.idle().call(), c.vault.functions.deployed().call()) == (400 * WAD, 600 * WAD)
    assert c.usdai.functions.totalSupply().call() == supply - 600 * WAD
    assert c.usdai.functions.balanceOf(c.vault.address).call() == 400 * WAD
    assert c.vault.functions.totalAssets().call() == 1_000 * WAD

    # when 100 is recalled
    receipt = send(c.vault.functions.recall(100 * WAD), c.operator)

    # then it is minted back to the vault
    assert events(c.vault, "Recalled", receipt) == [{"amount": 100 * WAD, "deployed": 500 * WAD}]
    assert (c.vault.functions.idle().call(), c.vault.functions.deployed().call()) == (500 * WAD, 500 * WAD)
    assert c.usdai.functions.totalSupply().call() == supply - 500 * WAD
    assert c.usdai.functions.balanceOf(c.vault.address).call() == 500 * WAD
    # and neither can exceed what is there
    with reverts("sUSDai: not enough idle"):
        send(c.vault.functions.deploy(500 * WAD + 1), c.operator)
    with reverts("sUSDai: not enough deployed"):
        send(c.vault.functions.recall(500 * WAD + 1), c.operator)


def test_vault_operator_functions_are_operator_only(c):
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    send(c.vault.functions.request_redeem(WAD), c.alice)
    for fn in (
        c.vault.functions.report(WAD, 0, 0, AT_BLOCK),
        c.vault.functions.write_down(0),
        c.vault.functions.write_up(0),
        c.vault.functions.service(1),
        c.vault.functions.deploy(WAD),
        c.vault.functions.recall(0),
    ):
        for sender in (c.stranger, c.admin):
            with reverts(MISSING_ROLE):
                send(fn, sender)


# ---------------------------------------------------------------- RevenueAnchor


def _tree(size: int) -> tuple[list[bytes], list[bytes], MerkleTree]:
    records = [f"settlement:{i}:{i * 7 % 1000}.25".encode() for i in range(size)]
    leaves = [leaf_hash(r) for r in records]
    return records, leaves, MerkleTree(leaves)


def test_anchor_once_per_epoch_and_verify_proofs(c):
    # given an epoch of 25 settlements
    records, leaves, tree = _tree(25)

    # when its root is anchored
    receipt = send(c.anchor.functions.anchor(7, tree.root), c.operator)

    # then it is stored, once
    assert c.anchor.functions.roots(7).call() == tree.root
    assert c.anchor.functions.latest_epoch().call() == 7
    assert events(c.anchor, "Anchored", receipt) == [{"epoch": 7, "root": tree.root}]
    with reverts("RevenueAnchor: epoch anchored"):
        send(c.anchor.functions.anchor(7, leaves[0]), c.operator)
    # and every record verifies on chain with its proof from financing/merkle.py
    for i, record in enumerate(records):
        assert c.anchor.functions.verify(7, record, tree.proof(i)).call() is True
    # while a tampered proof, a wrong or altered record, or an unanchored epoch does not
    proof = tree.proof(3)
    tampered = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
    assert c.anchor.functions.verify(7, records[3], tampered).call() is False
    assert c.anchor.functions.verify(7, records[4], proof).call() is False
    assert c.anchor.functions.verify(7, records[3] + b" ", proof).call() is False
    assert c.anchor.functions.verify(8, records[3], proof).call() is False


def test_verify_takes_leaf_data_never_a_node(c):
    # given an epoch of 4 records: root = H(H(l0, l1), H(l2, l3))
    records, leaves, tree = _tree(4)
    send(c.anchor.functions.anchor(1, tree.root), c.operator)
    inner = node_hash(leaves[0], leaves[1])
    assert tree.proof(0)[1:] == [node_hash(leaves[2], leaves[3])]
    assert node_hash(inner, tree.proof(0)[1]) == tree.root

    # then an inner node with the rest of the path, the root with an empty proof, or a leaf hash
    # passed as data, does not verify (each is hashed as a leaf first)
    assert c.anchor.functions.verify(1, inner, tree.proof(0)[1:]).call() is False
    assert c.anchor.functions.verify(1, tree.root, []).call() is False
    assert c.anchor.functions.verify(1, leaves[0], tree.proof(0)).call() is False
    # while the record itself does
    assert c.anchor.functions.verify(1, records[0], tree.proof(0)).call() is True

    # and a one-record epoch verifies its record with an empty proof, not its root
    record = b'{"settlement":1}'
    send(c.anchor.functions.anchor(2, leaf_hash(record)), c.operator)
    assert c.anchor.functions.verify(2, record, []).call() is True
    assert c.anchor.functions.verify(2, leaf_hash(record), []).call() is False


def test_verify_takes_records_as_long_as_a_settlement(c):
    # given a record as long as the longest settlement record (every column at its maximum: 2,360 bytes)
    # and the 4,096-byte cap
    records = [b"x" * 2_360, b"y" * 4_096, b"short"]
    tree = MerkleTree([leaf_hash(r) for r in records])
    send(c.anchor.functions.anchor(1, tree.root), c.operator)

    # then each verifies, and a longer one is refused
    for i, record in enumerate(records):
        assert c.anchor.functions.verify(1, record, tree.proof(i)).call() is True
    with pytest.raises((TransactionFailed, ContractLogicError, ValueError)):
        c.anchor.functions.verify(1, b"z" * 4_097, []).call()


def test_anchor_rules(c):
    _, _, tree = _tree(3)
    # before any anchor latest_epoch has no answer (0 would read as epoch 0)
    with reverts("RevenueAnchor: no epoch anchored"):
        c.anchor.functions.latest_epoch().call()
    with reverts(MISSING_ROLE):
        send(c.anchor.functions.anchor(1, tree.root), c.stranger)
    with reverts("RevenueAnchor: empty root"):
        send(c.anchor.functions.anchor(1, b"\x00" * 32), c.operator)
    with reverts("RevenueAnchor: invalid epoch"):
        send(c.anchor.functions.anchor(MAX_UINT, tree.root), c.operator)
    with reverts("RevenueAnchor: no epoch anchored"):
        c.anchor.functions.latest_epoch().call()
    # epoch 0 anchored is told apart from none
    send(c.anchor.functions.anchor(0, tree.root), c.operator)
    assert c.anchor.functions.latest_epoch().call() == 0
    # epochs may arrive out of order; latest_epoch is the highest
    send(c.anchor.functions.anchor(5, tree.root), c.operator)
    send(c.anchor.functions.anchor(3, tree.root), c.operator)
    assert c.anchor.functions.latest_epoch().call() == 5
    assert c.anchor.functions.roots(4).call() == b"\x00" * 32


# ---------------------------------------------------------------- gas goals


def test_gas_goals(c):
    mint_gas = mint_title(c, token_id=1).gasUsed
    send(c.vault.functions.deposit(1_000 * WAD, c.alice), c.alice)
    deposit_gas = send(c.vault.functions.deposit(1_000 * WAD, c.bob), c.bob).gasUsed
    # a deposit with every term of the NAV live: accrual streaming, profit unlocking
    send(c.vault.functions.report(10 * WAD, 5 * WAD, 10**12, AT_BLOCK), c.operator)
    deposit_after_report_gas = send(c.vault.functions.deposit(1_000 * WAD, c.carol), c.carol).gasUsed
    anchor_gas = []
    for epoch, size in enumerate((10, 1_000), start=1):
        receipt = send(c.anchor.functions.anchor(epoch, _tree(size)[2].root), c.operator)
        anchor_gas.append(receipt.gasUsed - calldata_gas(c.w3.eth.get_transaction(receipt.transactionHash).input))
    assert mint_gas <= 150_000
    assert deposit_gas <= 120_000
    assert deposit_after_report_gas <= 120_000
    assert max(anchor_gas) <= 60_000
    # the same whatever the epoch's size (calldata aside: a zero byte of the root costs 12 gas less)
    assert anchor_gas[0] == anchor_gas[1]
