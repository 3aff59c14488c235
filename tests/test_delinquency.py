"""Late instalments, the reserve, default and foreclosure: worked examples."""

from datetime import timedelta
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


def test_within_grace_nothing_happens_after_it_the_reserve_pays(loan, renter):
    # given $4,000 of revenue 10 days in: reserve $3,249.30 full, $461.384932 of principal repaid
    settle(loan, renter, "4000.00", T0 + timedelta(days=10))
    settlements_journal()
    lid = loan.pk

    # when servicing runs 3 days after the first due date (within the 5-day grace period)
    result = loans_service(now=DUE1 + timedelta(days=3))
    loan.refresh_from_db()
    assert result["reserve_draws"] == 0 and loan.days_past_due == 3 and loan.status == Loan.Status.ACTIVE

    # then 6 days after it, the reserve pays the accrued interest and the overdue principal
    result = loans_service(now=DUE1 + timedelta(days=6))
    loan.refresh_from_db()
    books = balances()
    assert result["reserve_draws"] == 1 and loan.days_past_due == 0
    assert books[f"principal:{lid}"] == Decimal("12000") - Decimal("933.10")  # instalment 1's principal covered
    assert books[f"interest:{lid}"] == 0
    assert Decimal("0") < -books[f"reserve:{lid}"] < Decimal("3249.30")  # the reserve paid the difference
    assert sum(books.values()) == 0


def test_no_revenue_grace_interest_then_default_at_60_days_past_due(loan):
    lid = loan.pk
    loans_service(now=DUE1 + timedelta(days=10))
    loan.refresh_from_db()
    assert loan.days_past_due == 10 and loan.status == Loan.Status.ACTIVE
    # interest: 15 % on $12,000 from T0, plus 5 % on the $933.10 overdue for the 5 days after grace
    seconds = (DUE1 + timedelta(days=10) - T0).total_seconds()
    expected = interest(Decimal("12000"), "0.15", seconds) + interest(Decimal("933.10"), "0.05", 5 * 86400)
    assert balances()[f"interest:{lid}"] == expected

    result = loans_service(now=DUE1 + timedelta(days=60))
    loan.refresh_from_db()
    assert result["defaulted"] == 1 and loan.status == Loan.Status.DEFAULTED and loan.days_past_due == 60


def test_foreclosure_keeps_renters_served_and_sends_revenue_to_the_loan(loan, renter, operator, owner):
    loans_service(now=DUE1 + timedelta(days=61))
    loan.refresh_from_db()
    assert loan.status == Loan.Status.DEFAULTED
    with pytest.raises(PermissionDenied):
        loan_foreclose(loan=loan, operator=owner)

    loan_foreclose(loan=loan, operator=operator, now=DUE1 + timedelta(days=62))
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
    settle(loan, renter, "2000.00", DUE1 + timedelta(days=63))
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
    loans_service(now=DUE1 + timedelta(days=61))
    response = client_as(operator).post(
        reverse("admin:financing_loan_changelist"), {"action": "foreclose", "_selected_action": [loan.pk]}, follow=True
    )
    assert "1 foreclosed." in response.content.decode()
    loan.refresh_from_db()
    assert loan.status == Loan.Status.FORECLOSED
