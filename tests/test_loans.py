"""Loans: apply within the LTV limit, approve, schedule, pledge, disburse; bad input refused."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from financing.models import Collateral, Instalment, JournalEntry, Loan
from financing.selectors.ledger import balances
from financing.services.loans import add_months, loan_apply, loan_approve, loan_max_amount, loan_reject
from marketplace.models import Listing
from tests.factories import make_owner
from tests.financing_fixtures import approved_collateral

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
def collateral(owner, operator):
    return approved_collateral(owner, operator, value="140000", purchase_price="240000", at=NOW, policy="P-1")


def test_the_maximum_is_75_percent_of_the_latest_appraisal(collateral):
    assert loan_max_amount(collateral) == Decimal("105000.00")


def test_above_the_ltv_limit_is_refused_with_the_maximum_shown(owner, collateral):
    with pytest.raises(ValidationError) as exc:
        loan_apply(
            owner=owner.owner_membership.company,
            collateral=collateral,
            amount=Decimal("105000.01"),
            tenor_months=12,
            now=NOW,
        )
    assert exc.value.message_dict["amount"] == [
        "At most $105,000.00 can be borrowed: 75% of the latest appraisal ($140,000.00)."
    ]
    assert Loan.objects.count() == 0


def test_other_bad_applications(owner, collateral):
    company = owner.owner_membership.company
    with pytest.raises(ValidationError) as exc:
        loan_apply(owner=company, collateral=collateral, amount=Decimal("-5"), tenor_months=48, kind="balloon", now=NOW)
    assert set(exc.value.message_dict) == {"amount", "tenor_months", "kind"}
    with pytest.raises(PermissionDenied):
        loan_apply(
            owner=make_owner().owner_membership.company,
            collateral=collateral,
            amount=Decimal("1000"),
            tenor_months=12,
            now=NOW,
        )
    Collateral.objects.filter(pk=collateral.pk).update(insurance_expires=date(2026, 11, 1))
    collateral.refresh_from_db()
    with pytest.raises(ValidationError) as exc:
        loan_apply(owner=company, collateral=collateral, amount=Decimal("1000"), tenor_months=12, now=NOW)
    assert "insurance lapsed on 2026-11-01" in exc.value.message_dict["collateral"][0]
    assert Loan.objects.count() == 0


def test_worked_example_approval_schedules_pledges_and_disburses(owner, operator, collateral):
    # given an application for $100,000 over 12 months at 15 % APR, fixed payment
    loan = loan_apply(
        owner=owner.owner_membership.company, collateral=collateral, amount=Decimal("100000"), tenor_months=12, now=NOW
    )
    assert loan.status == Loan.Status.APPLIED and loan.ltv_at_origination == Decimal("0.7143")
    with pytest.raises(PermissionDenied):
        loan_approve(loan=loan, operator=owner, now=NOW)

    # when an operator approves it
    loan = loan_approve(loan=loan, operator=operator, now=NOW)

    # then 12 instalments of $9,025.83 (the last one squares the principal), monthly from approval
    rows = list(Instalment.objects.filter(loan=loan))
    assert [r.payment for r in rows[:11]] == [Decimal("9025.83")] * 11
    assert sum(r.principal for r in rows) == Decimal("100000.00") and rows[-1].balance_after == 0
    assert [r.due for r in rows[:2]] == [datetime(2026, 12, 24, 12, tzinfo=UTC), datetime(2027, 1, 24, 12, tzinfo=UTC)]
    # and the collateral is pledged, its listing marked financed, the principal out of the vault
    collateral.refresh_from_db()
    assert collateral.lien == Collateral.Lien.PLEDGED
    assert Listing.objects.get(server=collateral.server).financed is True
    assert balances() == {f"principal:{loan.pk}": Decimal("100000.000000"), "vault_cash": Decimal("-100000.000000")}
    # and a second application against the same collateral is refused, approving twice too
    with pytest.raises(ValidationError):
        loan_apply(
            owner=owner.owner_membership.company,
            collateral=collateral,
            amount=Decimal("1000"),
            tenor_months=12,
            now=NOW,
        )
    with pytest.raises(ValidationError):
        loan_approve(loan=loan, operator=operator, now=NOW)
    assert JournalEntry.objects.count() == 1


def test_rejection(owner, operator, collateral):
    loan = loan_apply(
        owner=owner.owner_membership.company,
        collateral=collateral,
        amount=Decimal("5000"),
        tenor_months=24,
        kind=Loan.Kind.FIXED_PRINCIPAL,
        now=NOW,
    )
    assert loan_reject(loan=loan, operator=operator).status == Loan.Status.REJECTED
    # the collateral is free again for a new application
    again = loan_apply(
        owner=owner.owner_membership.company, collateral=collateral, amount=Decimal("5000"), tenor_months=24, now=NOW
    )
    assert again.status == Loan.Status.APPLIED


def test_add_months_keeps_the_day_or_the_months_end():
    jan31 = datetime(2027, 1, 31, 9, tzinfo=UTC)
    assert add_months(jan31, 1) == datetime(2027, 2, 28, 9, tzinfo=UTC)
    assert add_months(jan31, 13) == datetime(2028, 2, 29, 9, tzinfo=UTC)
    assert add_months(jan31, 11) == datetime(2027, 12, 31, 9, tzinfo=UTC)
    assert add_months(datetime(2026, 11, 24, tzinfo=UTC), 2) - timedelta(days=0) == datetime(2027, 1, 24, tzinfo=UTC)


def test_operator_approves_collateral_and_loans_from_the_admin(owner, operator, client_as, collateral):
    from django.urls import reverse

    loan = loan_apply(
        owner=owner.owner_membership.company, collateral=collateral, amount=Decimal("50000"), tenor_months=24, now=NOW
    )
    client = client_as(operator)
    response = client.post(
        reverse("admin:financing_loan_changelist"), {"action": "approve", "_selected_action": [loan.pk]}, follow=True
    )
    assert response.status_code == 200 and "1 approved." in response.content.decode()
    loan.refresh_from_db()
    assert loan.status == Loan.Status.ACTIVE and loan.instalments.count() == 24
    again = client.post(
        reverse("admin:financing_loan_changelist"), {"action": "approve", "_selected_action": [loan.pk]}, follow=True
    )
    assert "not awaiting approval" in again.content.decode()
    for name in ("collateral", "loan", "ledgeraccount", "journalentry"):
        assert client.get(reverse(f"admin:financing_{name}_changelist")).status_code == 200
    # the inlines show the schedule and the postings, with nothing to edit
    loan_page = client.get(reverse("admin:financing_loan_change", args=[loan.pk])).content.decode()
    entry = JournalEntry.objects.get()
    entry_page = client.get(reverse("admin:financing_journalentry_change", args=[entry.pk])).content.decode()
    assert "disbursement" in entry_page and 'name="postings-0-amount"' not in entry_page
    first_payment = str(loan.instalments.first().payment)
    assert 'name="instalments-0-payment"' not in loan_page and first_payment in loan_page
    assert client_as(owner).get(reverse("admin:financing_loan_changelist")).status_code == 302
