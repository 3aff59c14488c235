"""A financed server's revenue through the waterfall: a worked example, every balance written out."""

from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest

from financing.models import Appraisal, Collateral, JournalEntry
from financing.selectors import balances
from financing.services.collateral import collateral_register
from financing.services.loans import loan_apply, loan_approve
from financing.services.revenue import settlements_journal
from marketplace.models import Settlement
from marketplace.services import bookings
from tests.factories import make_listing

pytestmark = pytest.mark.django_db
T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
MICRO = Decimal("0.000001")


@pytest.fixture
def loan(owner, operator, renter):
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
    Collateral.objects.filter(pk=record.pk).update(approved_at=T0, approved_by=operator)
    Appraisal.objects.create(
        collateral=record,
        as_of=T0,
        age_years=Decimal("0.9"),
        depreciation_rate=Decimal("0.2"),
        residual_floor=Decimal("0.1"),
        depreciated_value=Decimal("24000"),
        trailing_net_revenue=Decimal("3000"),
        trailing_days=90,
        remaining_life_years=Decimal("4.1"),
        discount_rate=Decimal("0.12"),
        income_value=Decimal("20000"),
        value=Decimal("20000"),
    )
    record.refresh_from_db()
    loan = loan_apply(
        owner=owner.owner_membership.company, collateral=record, amount=Decimal("12000"), tenor_months=12, now=T0
    )
    return loan_approve(loan=loan, operator=operator, now=T0)


def settle(loan, renter, gross: str, at: datetime) -> Settlement:
    listing = loan.collateral.server.listing
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


def test_worked_example_revenue_repays_the_loan(loan, renter):
    # given a $12,000 loan at 15 % over 12 months: $1,083.10 a month, reserve target 3 × = $3,249.30
    assert loan.instalments.first().payment == Decimal("1083.10")
    lid, owner = loan.pk, loan.owner.pk

    # when $4,000 of revenue is settled 10 days after disbursement
    settle(loan, renter, "4000.00", T0 + timedelta(days=10))
    settlements_journal()

    # then: 5 % fee 200, 1 % insurance 40, reserve 3,249.30, then interest accrued over 10 days
    # (12,000 × 15 % × 10/365 = 49.315068), then principal toward instalment 1 (933.10 due) with the rest
    interest = (Decimal("12000") * Decimal("0.15") * 10 / 365).quantize(MICRO, rounding=ROUND_HALF_UP)
    assert interest == Decimal("49.315068")
    principal = Decimal("4000") - 200 - 40 - Decimal("3249.30") - interest
    assert principal == Decimal("461.384932")
    protocol = (interest * Decimal("0.10")).quantize(MICRO, rounding=ROUND_HALF_UP)
    assert balances() == {
        f"interest:{lid}": Decimal("0.000000"),  # accrued 49.315068, collected 49.315068
        "interest_income": -(interest - protocol),  # the vault's 90 % of interest
        "protocol_fee": -protocol,  # 4.931507
        "insurance_payable": Decimal("-40.000000"),
        "platform_revenue": Decimal("-200.000000"),
        f"principal:{lid}": Decimal("12000") - principal,  # 11,538.615068 outstanding
        f"reserve:{lid}": Decimal("-3249.300000"),  # held for debt service
        "vault_cash": Decimal("-12000") + interest + principal,
        "gateway_clearing": -(interest + principal),  # cash moved from the gateway to the vault
        "renter_escrow": Decimal("4000.000000"),  # no payment journaled in this example
    }
    assert sum(balances().values()) == 0
    assert f"owner_payable:{owner}" not in balances()  # nothing left for the owner yet

    # when a second $2,000 arrives 20 days after disbursement: the reserve is full, so after fees,
    # interest (10 more days on the lower balance) and the rest of instalment 1's principal, the
    # owner gets what is left (no sweep: DSCR is not below 1.25 with $5,700 net over 90 days)
    settle(loan, renter, "2000.00", T0 + timedelta(days=20))
    settlements_journal()
    interest2 = ((Decimal("12000") - principal) * Decimal("0.15") * 10 / 365).quantize(MICRO, rounding=ROUND_HALF_UP)
    principal2 = Decimal("933.10") - principal
    owner_share = Decimal("2000") - 100 - 20 - interest2 - principal2
    books = balances()
    assert books[f"principal:{lid}"] == Decimal("12000") - Decimal("933.10")  # instalment 1's principal, repaid
    assert books[f"owner_payable:{owner}"] == -owner_share
    assert books[f"reserve:{lid}"] == Decimal("-3249.300000")
    assert sum(books.values()) == 0
    assert JournalEntry.objects.filter(settlement__isnull=False).count() == 2


@pytest.mark.parametrize("span_days", [1, 120])
def test_the_loan_books_trailing_revenue_equals_the_direct_sum(loan, renter, span_days):
    from financing.services.collateral import trailing_net_revenue
    from financing.services.ledger import Accounts
    from financing.services.servicing import LoanBook

    server = loan.collateral.server
    moments = [T0 + timedelta(days=d) for d in (1, 30, 60, 89, 91, 95, 130)]
    for k, at in enumerate(moments):
        settle(loan, renter, f"{100 + k}.00", at)
    window_start = T0 + timedelta(days=95)
    window_end = window_start + timedelta(days=span_days)
    book = LoanBook([loan], window_start=window_start, window_end=window_end, accounts=Accounts())
    for at in (window_start, window_start + timedelta(hours=12), window_end):
        assert book._trailing_net(server.pk, at) == trailing_net_revenue(server=server, until=at), at
