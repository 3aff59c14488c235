"""Loss recognition in the books: impairment by days past due, non-accrual at default, the loss
waterfall at foreclosure (reserve, first-loss capital, the insurance claim), recoveries and
the write-off. Worked examples on the shared $12,000 loan (see tests/financing_fixtures.py)."""

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from financing.models import Appraisal, FirstLoss, InsuranceClaim, JournalEntry, Loan, Posting
from financing.selectors.ledger import balances
from financing.services.collateral import hardware_loss_declare
from financing.services.delinquency import loan_foreclose, loans_service
from financing.services.losses import claim_settle, first_loss_post, loan_write_off
from financing.services.revenue import settlements_journal
from financing.services.wallets import usdai_buy
from tests.factories import make_lender
from tests.financing_fixtures import T0, serve_daily_until, settle

pytestmark = pytest.mark.django_db
ZERO = Decimal(0)


def reappraise(loan, value: str) -> None:
    """The hardware's value falls (a newer appraisal): its recovery value is 70 % of it."""
    latest = Appraisal.objects.filter(collateral_id=loan.collateral_id).latest("as_of")
    latest.pk = None
    latest.as_of, latest.value = T0 + timedelta(hours=1), Decimal(value)
    latest.save()


def test_worked_example_a_loss_from_delinquency_to_write_off(loan, renter, operator):
    lid = loan.pk
    reappraise(loan, "5000")  # recovery value: $3,500
    recovery = Decimal("3500.00")

    # 30 days past due (the reserve spent on the first instalments): a quarter of the expected loss
    at30 = serve_daily_until(loan, dpd=30)
    books = balances()
    principal, reserve = books[f"principal:{lid}"], -books.get(f"reserve:{lid}", ZERO)
    expected_loss = principal - reserve - recovery
    assert loan.status == Loan.Status.ACTIVE and expected_loss > 0
    assert -books[f"allowance:{lid}"] == (expected_loss / 4).quantize(Decimal("0.000001"))
    assert books["credit_losses"] == -books[f"allowance:{lid}"]
    assert books[f"interest:{lid}"] > 0  # still accruing
    assert sum(books.values()) == 0

    # default (60 days past due): interest stops and what was accrued unpaid is reversed;
    # all of the expected loss is provided for
    unpaid_before = sum(Posting.objects.filter(account__code=f"interest:{lid}").values_list("amount", flat=True), ZERO)
    income_before = books["interest_income"]
    defaulted_at = serve_daily_until(loan, status=Loan.Status.DEFAULTED, start=at30)
    books = balances()
    principal = books[f"principal:{lid}"]
    assert books[f"interest:{lid}"] == 0
    reversed_ = Posting.objects.filter(account__code=f"interest:{lid}", line="non_accrual")
    assert reversed_.count() == 1 and -reversed_.get().amount >= unpaid_before
    assert books["interest_income"] > income_before  # less income (a credit balance, so larger)
    assert -books[f"allowance:{lid}"] == principal - recovery  # the reserve is spent
    assert books.get(f"reserve:{lid}", ZERO) == 0
    # a day later the defaulted loan accrues nothing more
    loans_service(now=defaulted_at + timedelta(days=1))
    assert balances()[f"interest:{lid}"] == 0

    # foreclosure: nothing left in the reserve, no first-loss capital, no claim: the allowance stands
    loan_foreclose(loan=loan, operator=operator, now=defaulted_at + timedelta(days=2))
    books = balances()
    assert books[f"principal:{lid}"] == principal and -books[f"allowance:{lid}"] == principal - recovery

    # re-lease revenue after foreclosure pays principal; the expected loss, and the allowance, fall with it
    settle(loan, renter, "2000.00", defaulted_at + timedelta(days=3))
    settlements_journal()
    loans_service(now=defaulted_at + timedelta(days=4))
    books = balances()
    recovered = principal - books[f"principal:{lid}"]
    assert recovered == Decimal("2000.00") - Decimal("100.00") - Decimal("20.00")  # after fee and insurance
    assert -books[f"allowance:{lid}"] == principal - recovered - recovery
    reversal = Posting.objects.get(account__code=f"allowance:{lid}", line="impairment_reversal")
    assert reversal.amount == recovered

    # the hardware sells for $3,000, $500 short of its recovery value: the loan is written off
    with pytest.raises(ValidationError):
        loan_write_off(loan=loan, operator=operator, sale_proceeds=Decimal("-1"))
    with pytest.raises(PermissionDenied):
        loan_write_off(loan=loan, operator=loan.owner.memberships.first().user, sale_proceeds=Decimal("3000"))
    left = books[f"principal:{lid}"]
    losses_before = books["credit_losses"]
    loan_write_off(loan=loan, operator=operator, sale_proceeds=Decimal("3000.00"))
    loan.refresh_from_db()
    books = balances()
    assert loan.status == Loan.Status.WRITTEN_OFF
    assert books[f"principal:{lid}"] == 0 and books[f"allowance:{lid}"] == 0
    assert books["credit_losses"] == losses_before + Decimal("500.00")  # beyond the allowance
    assert books["credit_losses"] == left - Decimal("3000.00") + (losses_before - (left - recovery))
    assert sum(books.values()) == 0
    # the whole loss: principal lent less everything that came back as principal
    came_back = sum(
        Posting.objects.filter(account__code="vault_cash", line="to_vault_principal").values_list("amount", flat=True),
        ZERO,
    )
    assert books["credit_losses"] == Decimal("12000") - came_back


def test_a_loan_that_becomes_current_again_has_its_impairment_reversed(loan, renter):
    lid = loan.pk
    reappraise(loan, "5000")
    at30 = serve_daily_until(loan, dpd=30)
    impaired = -balances()[f"allowance:{lid}"]
    assert impaired > 0
    # the owner's server earns enough to catch up
    settle(loan, renter, "20000.00", at30 + timedelta(hours=1))
    settlements_journal()
    loans_service(now=at30 + timedelta(hours=2))
    loan.refresh_from_db()
    books = balances()
    assert loan.days_past_due == 0 and books.get(f"allowance:{lid}", ZERO) == 0
    assert books["credit_losses"] == 0  # impairment and reversal cancel
    assert Posting.objects.get(account__code=f"allowance:{lid}", line="impairment_reversal").amount == impaired


def test_the_loss_waterfall_reserve_first_loss_then_the_claim_paid_short(loan, operator):
    lid = loan.pk
    curator = make_lender()
    usdai_buy(user=curator, amount=Decimal("1500.00"))

    # bad input: nothing written
    entries = JournalEntry.objects.count()
    for amount, field in (("0", "amount"), ("-5", "amount"), ("1600", "amount"), ("12000.01", "amount")):
        with pytest.raises(ValidationError) as err:
            first_loss_post(user=curator, loan=loan, amount=Decimal(amount))
        assert field in err.value.message_dict or "__all__" in err.value.message_dict
    assert JournalEntry.objects.count() == entries and not FirstLoss.objects.exists()

    # a curator posts $1,200 of first-loss capital: 20 % a year on it, as a share of the loan's interest
    position = first_loss_post(user=curator, loan=loan, amount=Decimal("1200.00"))
    assert position.premium_share == Decimal("0.1333")  # 1,200 × 0.20 / (12,000 × 0.15), rounded down
    books = balances()
    assert books[f"first_loss:{lid}"] == Decimal("-1200.00")
    assert books[f"usdai:{curator.pk}"] == Decimal("-300.00")

    # the hardware is lost on day 2: a claim for $20,000 (the appraisal, below the coverage);
    # the claim is the recovery now, and it covers the loan: no impairment
    claim = hardware_loss_declare(
        collateral=loan.collateral, operator=operator, description="Rack fire", now=T0 + timedelta(days=2)
    )
    defaulted_at = serve_daily_until(loan, status=Loan.Status.DEFAULTED)
    books = balances()
    assert books.get(f"allowance:{lid}", ZERO) == 0
    principal = books[f"principal:{lid}"]
    reserve_left = -books.get(f"reserve:{lid}", ZERO)

    # foreclosure: the reserve, then first-loss capital, pay principal down; the claim is booked
    loan_foreclose(loan=loan, operator=operator, now=defaulted_at + timedelta(days=1))
    books = balances()
    claim_booked = principal - reserve_left - Decimal("1200.00")
    assert books[f"first_loss:{lid}"] == 0
    assert books[f"principal:{lid}"] == 0 and books[f"claim:{lid}"] == claim_booked
    assert books.get(f"allowance:{lid}", ZERO) == 0
    applied = Posting.objects.filter(
        account__code="vault_cash", line="to_vault_principal", entry__key__endswith="foreclosure"
    )
    assert sum(applied.values_list("amount", flat=True), ZERO) == reserve_left + Decimal("1200.00")

    # the insurer pays $2,000 less than the receivable: a loss, written down
    with pytest.raises(ValidationError):
        claim_settle(claim=claim, operator=operator, amount_paid=Decimal("-1"))
    with pytest.raises(ValidationError):
        claim_settle(claim=claim, operator=operator, amount_paid=Decimal("1.001"))
    paid = (claim_booked - Decimal("2000.00")).quantize(Decimal("0.01"), rounding="ROUND_DOWN")
    claim_settle(claim=claim, operator=operator, amount_paid=paid)
    claim.refresh_from_db()
    books = balances()
    assert claim.status == InsuranceClaim.Status.PAID and claim.amount_paid == paid
    assert books[f"claim:{lid}"] == 0 and books["credit_losses"] == claim_booked - paid
    assert Posting.objects.get(line="claim_shortfall", account__code=f"claim:{lid}").amount == paid - claim_booked
    with pytest.raises(ValidationError):
        claim_settle(claim=claim, operator=operator, amount_paid=Decimal("1"))

    # with nothing left owing the loan is closed; the curator's capital was all used, the premium
    # earned is paid back in USDai
    loans_service(now=defaulted_at + timedelta(days=2))
    loan.refresh_from_db()
    position.refresh_from_db()
    assert loan.status == Loan.Status.REPAID
    assert position.status == FirstLoss.Status.CLOSED and position.absorbed == Decimal("1200.00")
    books = balances()
    assert books.get(f"premium:{lid}", ZERO) == 0
    assert books[f"usdai:{curator.pk}"] == Decimal("-300.00") - position.returned
    assert sum(books.values()) == 0


def test_first_loss_earns_its_premium_and_gets_its_capital_back_when_the_loan_is_repaid(loan, renter):
    lid = loan.pk
    curator = make_lender()
    usdai_buy(user=curator, amount=Decimal("1200.00"))
    position = first_loss_post(user=curator, loan=loan, amount=Decimal("1200.00"))
    settle(loan, renter, "3000.00", T0 + timedelta(days=30))
    settlements_journal()
    books = balances()
    premium = -books[f"premium:{lid}"]
    interest_entry = Posting.objects.get(account__code=f"interest:{lid}", line="interest")
    collected = -interest_entry.amount
    net = collected - (collected * Decimal("0.10")).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
    assert premium == (net * Decimal("0.1333")).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
    to_vault = Posting.objects.get(entry=interest_entry.entry, line="to_vault_interest").amount
    assert to_vault == net - premium

    settle(loan, renter, "30000.00", T0 + timedelta(days=40))
    settlements_journal()
    for month in range(2, 14):
        settle(loan, renter, "5000.00", T0 + timedelta(days=30 * month + 1))
        settlements_journal()
    loans_service(now=T0 + timedelta(days=420))
    loan.refresh_from_db()
    position.refresh_from_db()
    books = balances()
    assert loan.status == Loan.Status.REPAID
    assert position.absorbed == 0 and position.returned > Decimal("1200.00")
    assert books[f"usdai:{curator.pk}"] == -position.returned
    assert books.get(f"first_loss:{lid}", ZERO) == 0 and books.get(f"premium:{lid}", ZERO) == 0
    assert sum(books.values()) == 0
