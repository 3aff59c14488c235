"""A financed server for financing tests: approved collateral worth $20,000 and a
$12,000, 12-month, 15 % loan on it (approved at T0, from a vault a lender funded
with $20,000), and a helper to settle revenue."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from financing.models import Appraisal, Collateral
from financing.services.collateral import collateral_register
from financing.services.loans import loan_apply, loan_approve
from financing.services.vault import vault_deposit
from financing.services.wallets import usdai_buy
from marketplace.models import Settlement
from marketplace.services import bookings
from tests.factories import make_lender, make_listing

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
VAULT_FUNDS = Decimal("20000.00")


def fund_vault(amount: Decimal = VAULT_FUNDS) -> None:
    """A lender buys ``amount`` of USDai and deposits it: the vault has the cash to lend."""
    lender = make_lender()
    usdai_buy(user=lender, amount=amount)
    vault_deposit(user=lender, amount=amount)


def approved_collateral(
    owner_user,
    operator,
    *,
    value: str,
    purchase_price: str,
    at: datetime,
    gpus: int = 8,
    price: str = "2.00",
    custodian: str = "Equinix FR5",
    insurer: str = "Lloyd's",
    policy: str = "P-9",
    annual_income: str = "240000",
) -> Collateral:
    """A listed server recorded as collateral, approved by ``operator`` and appraised at ``value``
    with ``annual_income`` of projected net income (the appraisal engine has its own tests; here
    the figures are what the test needs: by default, income that covers every loan the tests
    take at a projected DSCR above the warning level)."""
    listing = make_listing(owner_user, gpu_count=gpus, price=price)
    record = collateral_register(
        owner=owner_user.owner_membership.company,
        server=listing.server,
        purchase_price=Decimal(purchase_price),
        purchase_date=date(2026, 1, 1),
        custodian=custodian,
        custody_receipt="EQX-9",
        insurer=insurer,
        policy_number=policy,
        coverage=Decimal(purchase_price),
        insurance_expires=date(2028, 1, 1),
        today=at.date(),
    )
    Collateral.objects.filter(pk=record.pk).update(approved_at=at, approved_by=operator)
    Appraisal.objects.create(
        collateral=record,
        as_of=at,
        age_years=Decimal("0.9"),
        depreciation_rate=Decimal("0.2"),
        residual_floor=Decimal("0.1"),
        depreciated_value=Decimal(purchase_price) * Decimal("0.8"),
        trailing_net_revenue=Decimal("3000"),
        trailing_days=90,
        remaining_life_years=Decimal("4.1"),
        discount_rate=Decimal("0.12"),
        income_value=Decimal(value),
        annual_net_income=Decimal(annual_income),
        value=Decimal(value),
    )
    record.refresh_from_db()
    return record


@pytest.fixture
def loan(owner, operator, renter):
    record = approved_collateral(owner, operator, value="20000", purchase_price="30000", at=T0)
    loan = loan_apply(
        owner=owner.owner_membership.company, collateral=record, amount=Decimal("12000"), tenor_months=12, now=T0
    )
    fund_vault()
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


def serve_daily_until(loan, *, status=None, dpd=None, start=T0, days=400) -> datetime:
    """Service the loan once a day until it reaches ``status`` or ``dpd`` days past due; returns when."""
    from financing.services.delinquency import loans_service

    for day in range(1, days):
        at = start + timedelta(days=day)
        loans_service(now=at)
        loan.refresh_from_db()
        if (status and loan.status == status) or (dpd is not None and loan.days_past_due >= dpd):
            return at
    raise AssertionError("never reached")
