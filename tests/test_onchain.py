"""The books and the in-process EVM moving together: every flow goes through the
services, the outbox sends it (``drain``), and the chain is read back to the wei."""

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone
from eth_account import Account

from financing import merkle
from financing.chain import node
from financing.chain.client import address_for, custody_key, shares_wei, usd_to_wei, wei_to_usd
from financing.models import (
    Appraisal,
    ChainAlert,
    ChainOp,
    Collateral,
    JournalEntry,
    Loan,
    Posting,
    Redemption,
    RevenueEpoch,
    UsdaiPurchase,
    VaultDeposit,
    Wallet,
)
from financing.selectors.ledger import usdai_balance
from financing.selectors.proofs import settlement_leaf_data, settlement_proof
from financing.selectors.vault import redemption_estimate
from financing.services import outbox
from financing.services.collateral import collateral_approve, collateral_register
from financing.services.delinquency import loan_foreclose, loans_service
from financing.services.epochs import epoch_close
from financing.services.loans import loan_apply, loan_approve
from financing.services.reconcile import chain_reconcile
from financing.services.revenue import ledger_pull, settlements_journal
from financing.services.titles import collateral_record, record_hash
from financing.services.vault import redemption_request, vault_daily, vault_deposit, vault_service
from financing.services.wallets import booking_pay_usdai, usdai_buy, usdai_withdraw
from marketplace.models import Booking, Payment, Refund, Settlement
from marketplace.services import bookings
from tests.chain_fixtures import drain
from tests.factories import make_lender, make_listing, next_hour
from tests.financing_fixtures import T0, settle

pytestmark = pytest.mark.django_db

E18 = 10**18
DUE1 = T0.replace(month=12)  # the first instalment of a loan approved at T0


# --- Helpers ---------------------------------------------------------------------------


def wallet_of(user) -> Wallet:
    return Wallet.objects.get(user=user)


def usdai_on_chain(user) -> int:
    return node.get_chain().call("USDai", "balanceOf", wallet_of(user).address)


def fund(lender, amount: str) -> VaultDeposit:
    """``lender`` buys ``amount`` USDai and deposits all of it."""
    usdai_buy(user=lender, amount=Decimal(amount))
    return vault_deposit(user=lender, amount=Decimal(amount))


def titled_collateral(owner, operator) -> Collateral:
    """A server registered as collateral and approved by the operator at T0 (which mints its title)."""
    listing = make_listing(owner, gpu_count=8, price="2.00")
    record = collateral_register(
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
        today=T0.date(),
    )
    return collateral_approve(collateral=record, operator=operator, now=T0)


def appraise(collateral: Collateral, value: str) -> None:
    """An appraisal at ``value`` (a new server has no revenue yet: the engine would value it at 0)."""
    Appraisal.objects.create(
        collateral=collateral,
        as_of=T0,
        age_years=Decimal("0.9"),
        depreciation_rate=Decimal("0.2"),
        residual_floor=Decimal("0.1"),
        depreciated_value=Decimal("24000"),
        trailing_net_revenue=Decimal("3000"),
        trailing_days=90,
        remaining_life_years=Decimal("4.1"),
        discount_rate=Decimal("0.12"),
        income_value=Decimal(value),
        annual_net_income=Decimal("60000"),  # $5,000 a month: covers the loans taken here
        value=Decimal(value),
    )


def financed_loan(owner, operator, collateral: Collateral, amount: str = "12000") -> Loan:
    appraise(collateral, "20000")
    loan = loan_apply(
        owner=owner.owner_membership.company, collateral=collateral, amount=Decimal(amount), tenor_months=12, now=T0
    )
    return loan_approve(loan=loan, operator=operator, now=T0)


def settle_on(listing, renter, gross: str, at) -> Settlement:
    booking = bookings.booking_create(
        renter=renter, listing=listing, gpu_count=1, start=at - timedelta(hours=1), end=at, now=at - timedelta(hours=1)
    )
    return Settlement.objects.create(
        booking=booking,
        server=listing.server,
        interval_start=at - timedelta(hours=1),
        interval_end=at,
        gpu_seconds=3600,
        gross_amount=Decimal(gross),
    )


def written() -> dict[str, int]:
    """What a refused service call must not have written."""
    return {
        "ops": ChainOp.objects.count(),
        "entries": JournalEntry.objects.count(),
        "postings": Posting.objects.count(),
        "deposits": VaultDeposit.objects.count(),
        "redemptions": Redemption.objects.count(),
        "purchases": UsdaiPurchase.objects.count(),
        "payments": Payment.objects.count(),
    }


def locked_profit(locked: int, elapsed: int) -> int:
    """SUSDai._locked_profit: the lock decays linearly, rounded up."""
    period = settings.VAULT_UNLOCK_SECONDS
    if elapsed >= period:
        return 0
    return -(-locked * (period - elapsed) // period)


def share_price(chain) -> int:
    return chain.call("SUSDai", "convertToAssets", E18)


# --- 1. Buying USDai ---------------------------------------------------------------------


def test_buying_usdai_credits_the_ledger_and_mints_as_much_to_the_wallet(chain, lender):
    # when a lender buys $250 of USDai
    purchase = usdai_buy(user=lender, amount=Decimal("250.00"))

    # then the ledger holds it for them at once, and the outbox has the wallet's setup and the mint
    assert usdai_balance(user=lender) == Decimal("250.000000")
    wallet = wallet_of(lender)
    ops = list(ChainOp.objects.order_by("pk"))
    assert [(op.key, op.status) for op in ops] == [
        (f"wallet:{wallet.index}:gas", "pending"),
        (f"wallet:{wallet.index}:approve-vault", "pending"),
        (f"wallet:{wallet.index}:approve-operator", "pending"),
        (f"usdai:mint:{purchase.pk}", "pending"),
    ]
    assert ops[3].args == [wallet.address, str(250 * E18)]

    # when the outbox is sent
    assert drain() == {"confirmed": 4, "failed": 0, "waiting": 0}

    # then the wallet holds exactly the ledger's amount in wei, and every row has its receipt
    assert chain.call("USDai", "balanceOf", wallet.address) == usd_to_wei(usdai_balance(user=lender)) == 250 * E18
    assert chain.call("USDai", "totalSupply") == 250 * E18
    assert chain.call("USDai", "allowance", wallet.address, chain.addresses["SUSDai"]) == 2**256 - 1
    ops = list(ChainOp.objects.order_by("pk"))
    assert {op.status for op in ops} == {"confirmed"}
    assert ops[0].gas_used == 21000  # a plain ETH transfer
    assert all(op.gas_used > 21000 for op in ops[1:])
    assert all(op.block_number and op.block_timestamp and op.confirmed_at for op in ops)
    assert len({op.tx_hash for op in ops}) == 4
    assert [(op.sender, op.nonce) for op in ops[1:3]] == [(wallet.index, 0), (wallet.index, 1)]
    assert ops[3].nonce == ops[0].nonce + 1  # the operator's next transaction
    assert chain.w3.eth.get_balance(wallet.address) > 0  # gas money, less what the approvals cost


# --- 2. Deposits, redemptions, the FIFO queue ------------------------------------------


def test_deposit_redemption_request_and_service_pay_usdai_back(chain, lender):
    # given a lender who bought $1,000 of USDai and deposited it all
    deposit = fund(lender, "1000.00")
    assert usdai_balance(user=lender) == 0
    drain()

    # then the receipt set the shares: the first deposit's 10**6 wei of shares go to the dead address
    deposit.refresh_from_db()
    assert deposit.shares == Decimal("999.999999999999000000")
    wallet = wallet_of(lender)
    assert chain.call("SUSDai", "balanceOf", wallet.address) == 1000 * E18 - 10**6
    assert chain.call("SUSDai", "idle") == 1000 * E18
    assert chain.call("USDai", "balanceOf", wallet.address) == 0

    # when they request 400 sUSDai and the request is mined
    redemption = redemption_request(user=lender, shares_amount=Decimal("400"))
    assert redemption.status == Redemption.Status.REQUESTED
    drain()
    redemption.refresh_from_db()

    # then it is queued under the vault's id 0
    assert (redemption.request_id, redemption.status) == (0, Redemption.Status.QUEUED)
    assert chain.call("SUSDai", "queued_shares") == 400 * E18

    # when the queue is serviced (the price is exactly 1: no profit yet)
    op = vault_service()
    assert vault_service() is None  # one service call in flight at a time
    drain()

    # then it is paid in full, back in the ledger and on chain
    op.refresh_from_db()
    redemption.refresh_from_db()
    assert op.status == "confirmed"
    assert (redemption.status, redemption.paid, redemption.shares_left) == (
        Redemption.Status.PAID,
        Decimal("400.000000"),
        Decimal("0"),
    )
    assert redemption.paid_at is not None
    assert usdai_balance(user=lender) == Decimal("400.000000")
    assert chain.call("USDai", "balanceOf", wallet.address) == 400 * E18
    assert chain.call("SUSDai", "balanceOf", wallet.address) == 600 * E18 - 10**6
    assert chain.call("SUSDai", "idle") == 600 * E18
    assert vault_service() is None  # nothing queued
    assert chain_reconcile().mismatches == 0


def test_redemptions_wait_in_order_when_liquidity_is_short(chain, lender, settings):
    # given two lenders with $1,000 each in the vault, and $1,800 of it moved to T-bills (10 % buffer
    # kept) that earn nothing here, so that a share stays worth exactly $1 (this is about the order)
    settings.TBILL_RATE = Decimal("0")
    first, second, third = lender, make_lender(), make_lender()
    fund(first, "1000.00")
    fund(second, "1000.00")
    drain()
    assert vault_daily()["tbill_buy"] == Decimal("1800.00")
    drain()
    assert (chain.call("SUSDai", "idle"), chain.call("SUSDai", "deployed")) == (200 * E18, 1800 * E18)

    # when the first asks for 300 sUSDai, then the second for 100 (which alone would fit the $200 idle)
    a = redemption_request(user=first, shares_amount=Decimal("300"))
    b = redemption_request(user=second, shares_amount=Decimal("100"))
    drain()
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.request_id, b.request_id) == (0, 1)
    # the first request (id 0) is first in line, the second behind it
    assert redemption_estimate(redemption=a).position == 1
    assert redemption_estimate(redemption=b).position == 2
    vault_service()
    drain()

    # then the first is paid what there is ($200) and stays at the head; the second gets nothing yet
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.status, a.paid, a.shares_left) == (Redemption.Status.QUEUED, Decimal("200.000000"), Decimal("100"))
    assert (b.status, b.paid, b.shares_left) == (Redemption.Status.QUEUED, Decimal("0"), Decimal("100"))
    assert chain.call("SUSDai", "idle") == 0
    assert chain.call("SUSDai", "queue_head") == 0
    assert (usdai_balance(user=first), usdai_balance(user=second)) == (Decimal("200.000000"), Decimal("0.000000"))
    assert (usdai_on_chain(first), usdai_on_chain(second)) == (200 * E18, 0)

    # when a third lender's deposit brings $500 of cash and the queue is serviced again
    fund(third, "500.00")
    drain()
    op = vault_service()
    drain()

    # then the first is paid its remaining $100 before the second gets its $100
    op.refresh_from_db()
    paid = [(e["args"]["id"], e["args"]["assets"]) for e in op.result["events"] if e["event"] == "RedeemServiced"]
    assert paid == [("0", str(100 * E18)), ("1", str(100 * E18))]
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.status, a.paid) == (Redemption.Status.PAID, Decimal("300.000000"))
    assert (b.status, b.paid) == (Redemption.Status.PAID, Decimal("100.000000"))
    assert (usdai_balance(user=first), usdai_balance(user=second)) == (Decimal("300.000000"), Decimal("100.000000"))
    assert (usdai_on_chain(first), usdai_on_chain(second)) == (300 * E18, 100 * E18)
    assert chain.call("SUSDai", "idle") == 300 * E18
    assert chain_reconcile().mismatches == 0


# --- 3. Titles -----------------------------------------------------------------------------


def test_a_title_is_minted_on_approval_pledged_by_a_loan_and_foreclosed(chain, owner, operator, lender):
    # given a vault with cash to lend
    fund(lender, "20000.00")

    # when an operator approves a server as collateral
    collateral = titled_collateral(owner, operator)
    expected_hash = record_hash(collateral_record(collateral))
    drain()

    # then its title is minted to the owner company's wallet with the hash of the approved record
    company_wallet = Wallet.objects.get(company=owner.owner_membership.company)
    assert chain.call("CaliberNFT", "ownerOf", collateral.pk) == company_wallet.address
    assert "0x" + chain.call("CaliberNFT", "record_hash", collateral.pk).hex() == expected_hash
    assert chain.call("CaliberNFT", "lien", collateral.pk) is False

    # when a loan against it is approved
    loan = financed_loan(owner, operator, collateral)
    drain()

    # then the lien is set on chain
    assert chain.call("CaliberNFT", "lien", collateral.pk) is True

    # when the owner's wallet tries to move the pledged title anyway
    transfer = outbox.chainop_enqueue(
        key="test:title-transfer",
        sender=company_wallet.index,
        contract="CaliberNFT",
        function="transferFrom",
        args=[company_wallet.address, address_for(99), collateral.pk],
    )
    assert drain() == {"confirmed": 0, "failed": 1, "waiting": 0}

    # then the transaction is refused: the row fails, the operator is alerted, the title has not moved
    transfer.refresh_from_db()
    assert transfer.status == "failed" and "CaliberNFT: lien" in transfer.last_error
    assert transfer.tx_hash == "" and transfer.nonce is None  # never signed, so no nonce is used up
    assert list(ChainAlert.objects.values_list("kind", "op_id")) == [("reverted", transfer.pk)]
    assert chain.call("CaliberNFT", "ownerOf", collateral.pk) == company_wallet.address

    # when the loan defaults (no revenue: the reserve held back at origination pays the first
    # instalments, then the rest falls 60 days past due) and is foreclosed
    loans_service(now=DUE1 + timedelta(days=200))
    loan.refresh_from_db()
    assert loan.status == Loan.Status.DEFAULTED
    loan_foreclose(loan=loan, operator=operator, now=DUE1 + timedelta(days=201))
    drain()

    # then the title is the protocol's and the lien is gone
    assert chain.call("CaliberNFT", "ownerOf", collateral.pk) == address_for(0)
    assert chain.call("CaliberNFT", "lien", collateral.pk) is False
    assert ChainOp.objects.get(key=f"title:{collateral.pk}:foreclose:{loan.pk}").status == "confirmed"
    report = chain_reconcile()
    assert report.mismatches == 0, [c for c in report.checks if not c["ok"]]


def test_repaying_the_loan_clears_the_lien(chain, owner, operator, lender, renter):
    # given a pledged title
    fund(lender, "20000.00")
    collateral = titled_collateral(owner, operator)
    loan = financed_loan(owner, operator, collateral)
    drain()
    assert chain.call("CaliberNFT", "lien", collateral.pk) is True

    # when the server's revenue repays the loan over the year and servicing runs
    settle(loan, renter, "20000.00", T0 + timedelta(days=1))
    settlements_journal()
    for month in range(1, 13):
        settle(loan, renter, "5000.00", T0 + timedelta(days=30 * month + 1))
        settlements_journal()
    loans_service(now=T0 + timedelta(days=400))
    loan.refresh_from_db()
    assert loan.status == Loan.Status.REPAID
    drain()

    # then the lien is cleared on chain and the title stays with the owner
    assert ChainOp.objects.get(key=f"title:{collateral.pk}:lien:{loan.pk}:clear").status == "confirmed"
    assert chain.call("CaliberNFT", "lien", collateral.pk) is False
    company_wallet = Wallet.objects.get(company=owner.owner_membership.company)
    assert chain.call("CaliberNFT", "ownerOf", collateral.pk) == company_wallet.address


# --- 4. Loans, epochs and profit streaming ----------------------------------------------


def test_a_loan_deploys_vault_cash_and_its_interest_streams_into_the_share_price(
    chain, owner, operator, lender, renter
):
    # given $20,000 in the vault (share price exactly 1)
    fund(lender, "20000.00")
    drain()
    supply = chain.call("SUSDai", "totalSupply")
    assert supply == 20000 * E18
    prices = [share_price(chain)]
    assert prices == [E18]

    # when a $12,000 loan is approved
    loan = financed_loan(owner, operator, titled_collateral(owner, operator))
    drain()

    # then the principal leaves the vault's cash on chain as in the books
    assert chain.call("SUSDai", "deployed") == 12000 * E18
    assert chain.call("SUSDai", "idle") == 8000 * E18
    prices.append(share_price(chain))

    # when $4,000 of revenue is settled on the financed server, journaled, and the epoch closes then (the
    # books close at the settlement, not at the wall clock: after T0 + 10 days a close "now" would also
    # count the interest accrued since)
    settled_at = T0 + timedelta(days=10)
    settle(loan, renter, "4000.00", settled_at)
    ledger_pull()
    epoch = epoch_close(now=settled_at)
    drain()

    # then principal came back ($2,321.892466: instalment 1's and the sweep's, see
    # test_waterfall_financed) and the vault's 90 % of the interest ($49.315068 less the 10 %
    # protocol fee) is reported as profit
    assert (epoch.principal, epoch.profit, epoch.accrued) == (
        Decimal("2321.892466"),
        Decimal("44.383561"),
        Decimal("0.000000"),
    )
    principal, profit = usd_to_wei(epoch.principal), usd_to_wei(epoch.profit)
    # from now on the loan's interest accrues on chain, second by second, at the vault's share:
    # what is left of the principal × 15 % × 90 % (after the protocol fee), a second
    left = Decimal("12000") - epoch.principal
    rate = int(left * Decimal("0.15") * Decimal("0.9") / Decimal(365 * 86400) * E18)
    recall = ChainOp.objects.get(key=f"epoch:{epoch.number}:recall")
    report = ChainOp.objects.get(key=f"epoch:{epoch.number}:report")
    assert (recall.status, report.status) == ("confirmed", "confirmed")
    closed = int(epoch.closed_at.timestamp())
    assert recall.args == [str(principal)] and report.args == [str(profit), "0", str(rate), str(closed)]
    assert chain.call("SUSDai", "deployed") == 12000 * E18 - principal
    assert chain.call("SUSDai", "idle") == 8000 * E18 + principal + profit
    # nothing was accruing before: the whole profit is a surprise, and so is the interest of the
    # seconds between the books' close and the report's block; both are locked to stream in
    lag = report.block_timestamp - closed
    surprise = profit + rate * lag
    assert chain.call("SUSDai", "accrued_at") == closed
    assert chain.call("SUSDai", "locked") == surprise
    assert chain.call("SUSDai", "locked_at") == report.block_timestamp
    assert chain.call("SUSDai", "unlock_end") == report.block_timestamp + settings.VAULT_UNLOCK_SECONDS
    assert chain.call("SUSDai", "accrual_rate") == rate
    prices.append(share_price(chain))

    def nav(elapsed: int) -> int:
        """The NAV ``elapsed`` seconds after the report's block."""
        return 20000 * E18 + profit + rate * (lag + elapsed) - locked_profit(surprise, elapsed)

    # when half the unlock period has passed: half the surprise counts (the lock rounds up), and
    # the loan's interest since the close
    half = settings.VAULT_UNLOCK_SECONDS // 2
    chain.advance_to(report.block_timestamp + half)
    assert chain.call("SUSDai", "locked_profit") == locked_profit(surprise, half) == -(-surprise // 2)
    assert chain.call("SUSDai", "accrued") == rate * (lag + half)
    assert chain.call("SUSDai", "totalAssets") == nav(half)
    prices.append(share_price(chain))

    # when the whole period has passed: all of it
    chain.advance_to(report.block_timestamp + settings.VAULT_UNLOCK_SECONDS)
    assert chain.call("SUSDai", "locked_profit") == 0
    gross = nav(settings.VAULT_UNLOCK_SECONDS)
    assert gross == 20000 * E18 + profit + rate * (lag + settings.VAULT_UNLOCK_SECONDS)
    assert chain.call("SUSDai", "totalAssets") == gross
    prices.append(share_price(chain))

    # and the share price never went down
    assert prices == sorted(prices)
    assert prices[-1] == E18 * (gross + 1) // (supply + 1)
    assert prices[-1] > prices[0]


# --- 5. Proof of revenue ----------------------------------------------------------------------


def test_every_settlement_of_an_epoch_is_provable_against_the_anchored_root(chain, owner, renter):
    # given three settlements on two servers, journaled
    listings = [make_listing(owner, gpu_count=2), make_listing(owner, gpu_count=2)]
    at = T0 + timedelta(days=2)
    settlements = [
        settle_on(listings[0], renter, "2.00", at),
        settle_on(listings[1], renter, "3.50", at + timedelta(hours=1)),
        settle_on(listings[0], renter, "1.25", at + timedelta(hours=2)),
    ]
    settlements_journal()

    # when the epoch closes and the outbox is sent
    epoch = epoch_close()
    drain()

    # then the root on chain is the epoch's
    assert epoch.settlements == 3
    epoch.refresh_from_db()
    assert epoch.anchor_op.status == "confirmed"
    assert "0x" + chain.call("RevenueAnchor", "roots", epoch.number).hex() == epoch.root
    assert chain.call("RevenueAnchor", "latest_epoch") == epoch.number

    # and every settlement's leaf and proof verify, off chain and on chain
    for index, settlement in enumerate(settlements):
        proof = settlement_proof(settlement_id=settlement.pk)
        entry = JournalEntry.objects.get(settlement=settlement)
        assert proof.index == index and proof.epoch == epoch and proof.root == epoch.root
        assert proof.data == settlement_leaf_data(entry).decode()
        leaf = merkle.leaf_hash(proof.data.encode())
        assert proof.leaf == "0x" + leaf.hex()
        path = [bytes.fromhex(p[2:]) for p in proof.proof]
        assert merkle.verify(leaf, path, bytes.fromhex(epoch.root[2:])) is True
        # the chain hashes the record itself, with the leaf's domain prefix: a node is never a leaf
        assert chain.call("RevenueAnchor", "verify", epoch.number, proof.data.encode(), path) is True
        assert chain.call("RevenueAnchor", "verify", epoch.number, leaf, path) is False

        # a record altered by one character does not verify
        altered = proof.data.replace('"gross":"', '"gross":"9').encode()
        assert merkle.verify(merkle.leaf_hash(altered), path, bytes.fromhex(epoch.root[2:])) is False
        assert chain.call("RevenueAnchor", "verify", epoch.number, altered, path) is False
        # nor does a true record against another epoch
        assert chain.call("RevenueAnchor", "verify", epoch.number + 1, proof.data.encode(), path) is False


# --- 6. The RPC down; a crash after the broadcast ------------------------------------------


def test_rpc_down_rows_wait_with_backoff_then_go_exactly_once(chain, settings, lender):
    # given a purchase queued (the wallet's gas, two approvals, the mint)
    usdai_buy(user=lender, amount=Decimal("75.00"))
    head = ChainOp.objects.order_by("pk").first()

    # when the chain's JSON-RPC endpoint is down
    settings.CHAIN_RPC_URL = "http://127.0.0.1:9"
    node.chain_reset()
    before = timezone.now()
    assert outbox.chain_send() == {"confirmed": 0, "failed": 0, "waiting": 4}

    # then the head row waits with backoff, nothing was signed, and the rows behind it wait too
    head.refresh_from_db()
    assert (head.status, head.attempts, head.nonce, head.raw_tx) == ("pending", 1, None, "")
    assert head.last_error.startswith("RPC unreachable:")
    backoff = timedelta(seconds=settings.CHAIN_RETRY_BASE_SECONDS)
    assert before + backoff <= head.next_attempt_at <= timezone.now() + backoff
    assert list(ChainOp.objects.exclude(pk=head.pk).values_list("attempts", flat=True)) == [0, 0, 0]
    assert not ChainAlert.objects.exists()

    # when the sender runs again before the backoff is over: it waits, and does not count a try
    outbox.chain_send()
    head.refresh_from_db()
    assert head.attempts == 1

    # when it keeps failing after each backoff: the operator is alerted once, at the third try
    for attempts in (2, 3, 4):
        outbox.chain_send(now=head.next_attempt_at + timedelta(seconds=1))
        head.refresh_from_db()
        assert head.attempts == attempts
        assert head.next_attempt_at > timezone.now()
    assert settings.CHAIN_ALERT_AFTER_ATTEMPTS == 3
    assert list(ChainAlert.objects.values_list("kind", "op_id")) == [("stuck", head.pk)]
    assert set(ChainOp.objects.values_list("status", flat=True)) == {"pending"}

    # when the chain is back
    settings.CHAIN_RPC_URL = ""
    node.chain_reset()
    done = outbox.chain_send(now=timezone.now() + timedelta(days=1))

    # then every row is sent once: one hash each, nonces unique per sender, balances as in the books
    assert done == {"confirmed": 4, "failed": 0, "waiting": 0}
    ops = list(ChainOp.objects.order_by("pk"))
    assert {op.status for op in ops} == {"confirmed"}
    assert len({op.tx_hash for op in ops}) == 4
    assert len({(op.sender, op.nonce) for op in ops}) == 4
    live = node.get_chain()
    assert live.call("USDai", "balanceOf", wallet_of(lender).address) == 75 * E18
    assert live.call("USDai", "totalSupply") == 75 * E18
    assert live.chain_nonce(0) == ops[3].nonce + 1
    assert live.chain_nonce(wallet_of(lender).index) == 2


def test_a_row_broadcast_before_a_crash_is_not_sent_twice(chain, lender):
    # given a purchase whose setup rows are on chain
    purchase = usdai_buy(user=lender, amount=Decimal("40.00"))
    mint = ChainOp.objects.get(key=f"usdai:mint:{purchase.pk}")
    previous = ChainOp.objects.filter(pk__lt=mint.pk).order_by("-pk").first()
    drain()
    mint.refresh_from_db()
    signed = (mint.nonce, mint.tx_hash, mint.raw_tx)
    operator_nonce = chain.chain_nonce(0)

    # when the process had stopped after broadcasting the mint and before storing its receipt
    # (the row is as step 1 left it; the chain has executed it; nothing after the broadcast ran)
    ChainOp.objects.filter(pk=mint.pk).update(
        status="signed", block_number=None, block_timestamp=None, gas_used=None, result={}, confirmed_at=None
    )
    chain.applied_upto = previous.pk
    assert outbox.chain_send() == {"confirmed": 1, "failed": 0, "waiting": 0}

    # then the same transaction is confirmed: no second mint, the operator's nonce did not move
    mint.refresh_from_db()
    assert mint.status == "confirmed" and (mint.nonce, mint.tx_hash, mint.raw_tx) == signed
    assert mint.attempts == 0 and mint.block_number is not None
    assert chain.chain_nonce(0) == operator_nonce
    assert chain.call("USDai", "totalSupply") == 40 * E18
    assert chain.call("USDai", "balanceOf", wallet_of(lender).address) == 40 * E18


# --- 7. Replay ---------------------------------------------------------------------------------


def _reads(chain, *, at: int, wallets: list[str], token: int, epoch: int) -> dict:
    chain.advance_to(at)
    return {
        "usdai_supply": chain.call("USDai", "totalSupply"),
        "usdai": [chain.call("USDai", "balanceOf", a) for a in wallets],
        "susdai": [chain.call("SUSDai", "balanceOf", a) for a in wallets],
        "idle": chain.call("SUSDai", "idle"),
        "deployed": chain.call("SUSDai", "deployed"),
        "supply": chain.call("SUSDai", "totalSupply"),
        "locked_profit": chain.call("SUSDai", "locked_profit"),
        "total_assets": chain.call("SUSDai", "totalAssets"),
        "owner": chain.call("CaliberNFT", "ownerOf", token),
        "lien": chain.call("CaliberNFT", "lien", token),
        "record": chain.call("CaliberNFT", "record_hash", token),
        "root": chain.call("RevenueAnchor", "roots", epoch),
        "nonces": [chain.w3.eth.get_transaction_count(a) for a in [address_for(0), *wallets]],
    }


def test_a_rebuilt_embedded_chain_replays_the_outbox_to_the_same_state(chain, owner, operator, lender, renter):
    # given a series of flows on chain: a purchase, a deposit, a title and its lien, an epoch's report
    fund(lender, "20000.00")
    usdai_buy(user=renter, amount=Decimal("30.00"))
    collateral = titled_collateral(owner, operator)
    loan = financed_loan(owner, operator, collateral)
    settle(loan, renter, "4000.00", T0 + timedelta(days=10))
    ledger_pull()
    epoch = epoch_close()
    drain()
    assert set(ChainOp.objects.values_list("status", flat=True)) == {"confirmed"}
    wallets = list(Wallet.objects.order_by("index").values_list("address", flat=True))
    later = ChainOp.objects.order_by("-pk").first().block_timestamp + 3600
    before = _reads(chain, at=later, wallets=wallets, token=collateral.pk, epoch=epoch.number)
    assert before["locked_profit"] > 0 and before["lien"] is True and before["usdai"][1] == 30 * E18

    # when this process forgets its chain and builds it again from the same genesis
    node.chain_reset()
    rebuilt = node.get_chain()

    # then replaying the outbox gives the same state, read at the same block time
    assert rebuilt is not chain
    assert rebuilt.addresses == chain.addresses
    assert _reads(rebuilt, at=later, wallets=wallets, token=collateral.pk, epoch=epoch.number) == before


# --- 8. Reconciliation ---------------------------------------------------------------------------


def test_reconciliation_is_clean_after_the_flows_and_catches_a_mint_outside_the_outbox(
    chain, owner, operator, lender, renter
):
    # given deposits, a loan, an epoch with profit, a redemption at a price above 1,
    # a USDai booking and a withdrawal to an outside address, all on chain
    fund(lender, "20000.00")
    usdai_buy(user=renter, amount=Decimal("50.00"))
    collateral = titled_collateral(owner, operator)
    loan = financed_loan(owner, operator, collateral)
    settle(loan, renter, "4000.00", T0 + timedelta(days=10))
    ledger_pull()
    epoch_close()
    drain()
    report = ChainOp.objects.get(key="epoch:1:report")
    chain.advance_to(report.block_timestamp + settings.VAULT_UNLOCK_SECONDS // 3)
    redemption_request(user=lender, shares_amount=Decimal("1234.5"))
    drain()
    vault_service()
    listing = make_listing(owner, gpu_count=2)
    booking = bookings.booking_create(renter=renter, listing=listing, gpu_count=1, start=next_hour(2), end=next_hour(3))
    booking_pay_usdai(booking=booking, renter=renter)
    usdai_withdraw(user=renter, address=address_for(77), amount=Decimal("10.5"))
    drain()
    assert set(ChainOp.objects.values_list("status", flat=True)) == {"confirmed"}
    redemption = Redemption.objects.get()
    serviced = ChainOp.objects.get(function="service").result["events"]
    assets = int(next(e for e in serviced if e["event"] == "RedeemServiced")["args"]["assets"])
    # the price rose with the unlocked profit; the chain paid wei the books round down to micro-dollars
    assert redemption.paid == wei_to_usd(assets) > Decimal("1234.5")
    assert assets % 10**12 != 0

    # when the chain is reconciled against the ledger
    clean = chain_reconcile()

    # then every check matches (including the lender's sub-micro-dollar remainder of the redemption)
    assert clean.mismatches == 0, [c for c in clean.checks if not c["ok"]]
    assert clean.in_flight == 0
    assert not ChainAlert.objects.exists()

    # when one USDai is minted to the lender's wallet on chain, outside the outbox
    wallet = wallet_of(lender)
    usdai = chain.contract("USDai")
    base_fee = chain.w3.eth.get_block("latest")["baseFeePerGas"]
    tx = usdai.functions.mint(wallet.address, E18).build_transaction(
        {
            "from": address_for(0),
            "nonce": chain.w3.eth.get_transaction_count(address_for(0)),
            "gas": 200_000,
            "maxFeePerGas": base_fee * 2 + 10**9,
            "maxPriorityFeePerGas": 10**9,
            "chainId": chain.chain_id,
        }
    )
    chain.broadcast("0x" + Account.sign_transaction(tx, custody_key(0)).raw_transaction.hex().removeprefix("0x"))
    broken = chain_reconcile()

    # then the supply and that wallet's balance are reported, one USDai over, and the operator is alerted
    wrong = {c["name"]: (int(c["chain"]) - int(c["ledger"])) for c in broken.checks if not c["ok"]}
    assert wrong == {"USDai total supply (wei)": E18, f"USDai of {lender} {wallet.address} (wei)": E18}
    assert broken.mismatches == 2
    alert = ChainAlert.objects.get()
    assert alert.kind == "reconcile" and alert.message.startswith("2 reconciliation mismatches: USDai total supply")


# --- 9. Paying a booking with USDai ------------------------------------------------------------


def test_paying_a_booking_with_usdai_burns_it_and_a_refund_mints_it_back(chain, owner, renter):
    # given a renter holding $10 of USDai and a $4.00 booking (1 GPU, 2 hours, $2.00)
    usdai_buy(user=renter, amount=Decimal("10.00"))
    drain()
    listing = make_listing(owner, gpu_count=4, price="2.00")
    booking = bookings.booking_create(renter=renter, listing=listing, gpu_count=1, start=next_hour(2), end=next_hour(4))
    assert booking.amount == Decimal("4.00")

    # when they pay it with USDai
    booking = booking_pay_usdai(booking=booking, renter=renter)

    # then the booking is confirmed, the balance debited, and the chain burns as much
    assert booking.status == Booking.Status.CONFIRMED
    payment = Payment.objects.get(booking=booking)
    assert (payment.gateway, payment.status, payment.amount) == ("usdai", "succeeded", Decimal("4.000000"))
    assert usdai_balance(user=renter) == Decimal("6.000000")
    burn = ChainOp.objects.get(key=f"usdai:burn:payment:{payment.pk}")
    assert (burn.function, burn.args) == ("burn_from", [wallet_of(renter).address, str(4 * E18)])
    drain()
    assert usdai_on_chain(renter) == 6 * E18
    assert chain.call("USDai", "totalSupply") == 6 * E18

    # when they try to pay a $16 booking with the $6 left
    bigger = bookings.booking_create(renter=renter, listing=listing, gpu_count=2, start=next_hour(6), end=next_hour(10))
    assert bigger.amount == Decimal("16.00")
    before = written()
    with pytest.raises(ValidationError) as refused:
        booking_pay_usdai(booking=bigger, renter=renter)

    # then it is refused and nothing was written
    assert set(refused.value.message_dict) == {"payment_method"}
    assert written() == before
    bigger.refresh_from_db()
    assert bigger.status == Booking.Status.PENDING_PAYMENT
    assert usdai_balance(user=renter) == Decimal("6.000000")

    # when the paid booking is cancelled before it starts and the ledger pulls the refund
    bookings.booking_cancel(booking=booking, renter=renter)
    refund = Refund.objects.get(booking=booking)
    assert (refund.status, refund.amount) == ("succeeded", Decimal("4.000000"))
    assert ledger_pull()["refunds"] == 1

    # then the $4 is back in the renter's USDai, and minted back to the wallet
    assert usdai_balance(user=renter) == Decimal("10.000000")
    mint = ChainOp.objects.get(key=f"usdai:mint:refund:{refund.pk}")
    assert mint.args == [wallet_of(renter).address, str(4 * E18)]
    drain()
    assert usdai_on_chain(renter) == 10 * E18
    assert chain.call("USDai", "totalSupply") == 10 * E18
    assert chain_reconcile().mismatches == 0


# --- 10. T-bills --------------------------------------------------------------------------------


def test_cash_above_the_buffer_goes_to_t_bills_which_accrue_daily(chain, lender):
    # given $10,000 in the vault: the buffer is 10 % of NAV, $1,000
    fund(lender, "10000.00")
    drain()
    today = timezone.localdate()
    run = timezone.now()

    # when the daily run goes
    assert vault_daily(today=today, now=run) == {
        "tbill_interest": Decimal("0"),
        "tbill_buy": Decimal("9000.00"),
        "tbill_sell": Decimal("0"),
    }
    drain()

    # then $9,000 is in T-bills in the books and deployed on chain
    assert Posting.objects.filter(account__code="tbill_holdings").get().amount == Decimal("9000.000000")
    assert (chain.call("SUSDai", "idle"), chain.call("SUSDai", "deployed")) == (1000 * E18, 9000 * E18)

    # when it runs again the same day: nothing more is bought
    ops = ChainOp.objects.count()
    entries = JournalEntry.objects.count()
    assert vault_daily(today=today, now=run) == {"tbill_interest": 0, "tbill_buy": 0, "tbill_sell": 0}
    assert (ChainOp.objects.count(), JournalEntry.objects.count()) == (ops, entries)
    drain()
    assert chain.call("SUSDai", "deployed") == 9000 * E18

    # when it runs the next day: a day's interest on $9,000 at 4.5 % a year, reported as profit,
    # and 90 % of that interest (above the buffer, in whole cents) follows into T-bills
    assert Decimal("0.045") == settings.TBILL_RATE
    interest = (Decimal("9000") * settings.TBILL_RATE / 365).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
    assert interest == Decimal("1.109589")
    assert vault_daily(today=today + timedelta(days=1), now=run + timedelta(days=1)) == {
        "tbill_interest": interest,
        "tbill_buy": Decimal("0.99"),
        "tbill_sell": Decimal("0"),
    }
    chain.at(int((run + timedelta(days=1)).timestamp()))  # the chain's clock a day on too
    drain()
    chain.at(None)
    rate = int(Decimal("9000") * settings.TBILL_RATE / Decimal(365 * 86400) * E18)
    epoch = RevenueEpoch.objects.filter(profit__gt=0).get()  # the day's interest, reported
    assert ChainOp.objects.get(key=f"epoch:{epoch.number}:report").args == [
        str(usd_to_wei(interest)),
        "0",
        str(rate),
        str(int(epoch.closed_at.timestamp())),
    ]
    # the chain counted the T-bills' interest second by second since the day before: the posted day
    # of interest is no surprise (within the micro-dollar the posting rounds to): nothing new is locked
    report = ChainOp.objects.get(key=f"epoch:{epoch.number}:report")
    (reported,) = [e["args"] for e in report.result["events"] if e["event"] == "Reported"]
    assert int(reported["gain"]) + int(reported["loss"]) <= 10**12
    assert chain.call("SUSDai", "deployed") == usd_to_wei(Decimal("9000.99"))
    assert chain.call("SUSDai", "idle") == usd_to_wei(Decimal("1000") + interest - Decimal("0.99"))

    # and running that day again changes nothing
    ops, entries = ChainOp.objects.count(), JournalEntry.objects.count()
    assert vault_daily(today=today + timedelta(days=1), now=run + timedelta(days=1)) == {
        "tbill_interest": 0,
        "tbill_buy": 0,
        "tbill_sell": 0,
    }
    assert (ChainOp.objects.count(), JournalEntry.objects.count()) == (ops, entries)
    assert chain_reconcile().mismatches == 0


# --- 11. Bad input ---------------------------------------------------------------------------------


def test_bad_input_is_refused_by_field_and_writes_nothing(chain, lender):
    # given a lender with $100 of USDai, $60 of it deposited
    usdai_buy(user=lender, amount=Decimal("100.00"))
    vault_deposit(user=lender, amount=Decimal("60.00"))
    drain()
    before = written()
    outside = address_for(77)

    cases = [
        (lambda: vault_deposit(user=lender, amount=Decimal("40.01")), "amount"),  # above the balance
        (lambda: vault_deposit(user=lender, amount=Decimal("0")), "amount"),
        (lambda: vault_deposit(user=lender, amount=Decimal("1.0000001")), "amount"),
        (lambda: redemption_request(user=lender, shares_amount=Decimal("9.99")), "shares"),  # below the minimum
        (lambda: redemption_request(user=lender, shares_amount=Decimal("60")), "shares"),  # above holdings
        (lambda: usdai_withdraw(user=lender, address=outside.lower(), amount=Decimal("1")), "address"),
        (lambda: usdai_withdraw(user=lender, address="0x1234", amount=Decimal("1")), "address"),
        (lambda: usdai_withdraw(user=lender, address="not an address", amount=Decimal("1")), "address"),
        (lambda: usdai_withdraw(user=lender, address=outside, amount=Decimal("40.01")), "amount"),
        (lambda: usdai_withdraw(user=lender, address=wallet_of(lender).address, amount=Decimal("1")), "address"),
        (lambda: usdai_buy(user=lender, amount=Decimal("0")), "amount"),
        (lambda: usdai_buy(user=lender, amount=Decimal("10.005")), "amount"),
        (lambda: usdai_buy(user=lender, amount=Decimal("-5.00")), "amount"),
    ]
    for call, field in cases:
        with pytest.raises(ValidationError) as refused:
            call()
        assert set(refused.value.message_dict) == {field}
    assert written() == before
    assert usdai_balance(user=lender) == Decimal("40.000000")
    assert shares_wei(Decimal("60")) - 10**6 == chain.call("SUSDai", "balanceOf", wallet_of(lender).address)
