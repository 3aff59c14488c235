"""Late instalments, the reserve, default and foreclosure: worked examples."""

from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from financing.models import Collateral, Loan
from financing.selectors.ledger import balances
from financing.services.delinquency import loan_foreclose, loans_service, protocol_owner
from financing.services.revenue import settlements_journal
from marketplace.models import Listing, Server
from tests.financing_fixtures import T0, settle

pytestmark = pytest.mark.django_db
MICRO = Decimal("0.000001")
DUE1 = T0.replace(month=12)  # the first instalment: 24 Dec 2026


def interest(principal: Decimal, apr: str, seconds: float) -> Decimal:
    return (principal * Decimal(apr) * Decimal(seconds) / Decimal(365 * 86400)).quantize(MICRO, rounding=ROUND_HALF_UP)


def serve_until_default(loan) -> datetime:
    """Service a loan that earns nothing, at each instalment's end of grace and 60 days after
    each due date, in time order, until it defaults; returns when it did."""
    moments = sorted(
        at
        for due in loan.instalments.values_list("due", flat=True)
        for at in (due + timedelta(days=6), due + timedelta(days=60))
    )
    for at in moments:
        loans_service(now=at)
        loan.refresh_from_db()
        if loan.status == Loan.Status.DEFAULTED:
            return at
    raise AssertionError("the loan never defaulted")


def test_worked_example_the_reserve_from_origination_to_release(loan, renter):
    # given the $12,000 loan, whose $3,249.30 reserve (3 payments) was held back from the proceeds
    lid, owner = loan.pk, loan.owner.pk
    assert -balances()[f"reserve:{lid}"] == Decimal("3249.30") == loan.reserve_funded

    # when servicing runs 3 days after the first due date (within the 5-day grace period), with no revenue
    result = loans_service(now=DUE1 + timedelta(days=3))
    loan.refresh_from_db()
    assert result["reserve_draws"] == 0 and loan.days_past_due == 3 and loan.status == Loan.Status.ACTIVE

    # then 6 days after it, the reserve pays the accrued interest and instalment 1's principal
    result = loans_service(now=DUE1 + timedelta(days=6))
    loan.refresh_from_db()
    books = balances()
    accrued = (
        interest(Decimal("12000"), "0.15", (DUE1 + timedelta(days=3) - T0).total_seconds())
        + interest(Decimal("12000"), "0.15", 3 * 86400)
        + interest(Decimal("933.10"), "0.05", 86400)  # grace-rate interest on the overdue principal, for 1 day
    )
    drawn = accrued + Decimal("933.10")
    assert result["reserve_draws"] == 1 and loan.days_past_due == 0
    assert books[f"principal:{lid}"] == Decimal("12000") - Decimal("933.10")
    assert books[f"interest:{lid}"] == 0
    assert -books[f"reserve:{lid}"] == Decimal("3249.30") - drawn
    assert sum(books.values()) == 0

    # when $3,000 of revenue arrives 4 days later: fee, insurance, 4 days of interest, instalment 2's
    # principal (due next), then the reserve is refilled before the sweep (DSCR 2,850 / 3,249.30 < 1.25)
    instalment2 = loan.instalments.get(number=2)
    settle(loan, renter, "3000.00", DUE1 + timedelta(days=10))
    settlements_journal()
    books = balances()
    interest4 = interest(Decimal("12000") - Decimal("933.10"), "0.15", 4 * 86400)
    left = Decimal("3000") - 150 - 30 - interest4 - instalment2.principal - drawn
    sweep = (left / 2).quantize(MICRO, rounding=ROUND_HALF_UP)
    assert -books[f"reserve:{lid}"] == Decimal("3249.30")  # full again
    assert books[f"principal:{lid}"] == Decimal("12000") - Decimal("933.10") - instalment2.principal - sweep
    assert books[f"owner_payable:{owner}"] == -(left - sweep)

    # when the rest is repaid by revenue and servicing finds nothing outstanding
    settle(loan, renter, "30000.00", DUE1 + timedelta(days=20))
    settlements_journal()
    for month in range(2, 13):
        settle(loan, renter, "5000.00", DUE1 + timedelta(days=30 * month + 1))
        settlements_journal()
    before_release = balances()[f"owner_payable:{owner}"]
    loans_service(now=T0 + timedelta(days=400))
    loan.refresh_from_db()

    # then the loan is repaid and its reserve goes back to the owner, to the micro-dollar
    books = balances()
    assert loan.status == Loan.Status.REPAID and loan.reserve_released_at == T0 + timedelta(days=400)
    assert books[f"principal:{lid}"] == 0 and books[f"reserve:{lid}"] == 0
    assert books[f"owner_payable:{owner}"] == before_release - Decimal("3249.30")
    assert sum(books.values()) == 0
    # servicing again releases nothing twice
    loans_service(now=T0 + timedelta(days=401))
    assert balances()[f"owner_payable:{owner}"] == before_release - Decimal("3249.30")


def test_no_revenue_the_reserve_pays_then_grace_interest_then_default_at_60_days_past_due(loan):
    lid = loan.pk
    # within the first instalment's grace period nothing is drawn; 10 days past due, grace interest
    loans_service(now=DUE1 + timedelta(days=4))
    loan.refresh_from_db()
    assert loan.days_past_due == 4 and -balances()[f"reserve:{lid}"] == Decimal("3249.30")

    # the reserve pays while it lasts; then a loan without revenue falls behind and defaults at 60 DPD
    defaulted_at = serve_until_default(loan)
    books = balances()
    assert books[f"reserve:{lid}"] == 0  # spent before the default
    assert loan.days_past_due == 60
    assert defaulted_at > DUE1 + timedelta(days=60)  # later than without a reserve
    assert sum(books.values()) == 0


def test_foreclosure_keeps_renters_served_and_sends_revenue_to_the_loan(loan, renter, operator, owner):
    defaulted_at = serve_until_default(loan)
    with pytest.raises(PermissionDenied):
        loan_foreclose(loan=loan, operator=owner)

    loan_foreclose(loan=loan, operator=operator, now=defaulted_at + timedelta(days=1))
    loan.refresh_from_db()
    server = Server.objects.get(pk=loan.collateral.server_id)
    assert loan.status == Loan.Status.FORECLOSED
    assert Collateral.objects.get(pk=loan.collateral_id).lien == Collateral.Lien.FORECLOSED
    assert server.owner == protocol_owner()
    listing = Listing.objects.get(server=server)
    assert listing.status == Listing.Status.ACTIVE and listing.financed  # still bookable, still collateral
    with pytest.raises(ValidationError):
        loan_foreclose(loan=loan, operator=operator)

    # revenue after fees now goes to the loan: interest first, then all outstanding principal
    settle(loan, renter, "2000.00", defaulted_at + timedelta(days=2))
    settlements_journal()
    books = balances()
    assert books[f"interest:{loan.pk}"] == 0
    assert books[f"principal:{loan.pk}"] < Decimal("12000")
    assert f"owner_payable:{protocol_owner().pk}" not in books  # nothing left over for an owner
    assert sum(books.values()) == 0


def test_a_repaid_loan_frees_its_collateral(loan, renter):
    settle(loan, renter, "20000.00", T0 + timedelta(days=1))
    settlements_journal()
    # the waterfall takes only what is due; repay the rest as revenue arrives over the year
    for month in range(1, 13):
        settle(loan, renter, "5000.00", T0 + timedelta(days=30 * month + 1))
        settlements_journal()
    loans_service(now=T0 + timedelta(days=400))
    loan.refresh_from_db()
    collateral = Collateral.objects.get(pk=loan.collateral_id)
    assert loan.status == Loan.Status.REPAID and collateral.lien == Collateral.Lien.FREE
    assert balances()[f"principal:{loan.pk}"] == 0
    assert Listing.objects.get(server=collateral.server).financed is False


def test_hardware_loss_opens_a_claim_and_takes_the_server_off_the_market(loan, operator, owner):
    from financing.models import InsuranceClaim
    from financing.services.collateral import hardware_loss_declare
    from marketplace.models import Gpu

    with pytest.raises(PermissionDenied):
        hardware_loss_declare(collateral=loan.collateral, operator=owner, description="fire")
    with pytest.raises(ValidationError):
        hardware_loss_declare(collateral=loan.collateral, operator=operator, description=" ")
    claim = hardware_loss_declare(collateral=loan.collateral, operator=operator, description="Rack fire in FR5")
    assert claim.amount_claimed == Decimal("20000.00")  # the appraisal, below the $30,000 coverage
    assert (claim.insurer, claim.policy_number, claim.status) == ("Lloyd's", "P-9", InsuranceClaim.Status.OPEN)
    server = loan.collateral.server
    assert set(Gpu.objects.filter(server=server).values_list("status", flat=True)) == {"failed"}
    listing = Listing.objects.get(server=server)
    assert listing.status == Listing.Status.PAUSED and listing.gpus_in_service == 0


def test_lapsed_insurance_is_flagged_in_the_loan_book_and_operators_foreclose_from_the_admin(
    loan,
    lender,
    operator,
    client_as,
):
    from django.urls import reverse

    Collateral.objects.filter(pk=loan.collateral_id).update(insurance_expires=T0.date())
    book = client_as(lender).get(reverse("financing:loan_book")).content.decode()
    assert "insurance lapsed" in book
    serve_until_default(loan)
    response = client_as(operator).post(
        reverse("admin:financing_loan_changelist"), {"action": "foreclose", "_selected_action": [loan.pk]}, follow=True
    )
    assert "1 foreclosed." in response.content.decode()
    loan.refresh_from_db()
    assert loan.status == Loan.Status.FORECLOSED
