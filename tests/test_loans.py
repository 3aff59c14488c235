"""Loans: apply within the LTV limit, approve, schedule, pledge, disburse; bad input refused."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from financing.models import ChainOp, Collateral, Instalment, JournalEntry, Loan
from financing.selectors.ledger import balances
from financing.services.loans import add_months, loan_apply, loan_approve, loan_max_amount, loan_reject
from financing.services.vault import vault_daily
from marketplace.models import Listing
from tests.factories import make_owner
from tests.financing_fixtures import approved_collateral, fund_vault

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
    # given a vault a lender funded with $120,000, of which the daily run put $108,000 in T-bills
    fund_vault(Decimal("120000.00"))
    assert vault_daily(today=NOW.date())["tbill_buy"] == Decimal("108000.00")
    # and an application for $100,000 over 12 months at 15 % APR, fixed payment
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
    # and the vault sold $88,000 of T-bills to lend $100,000 of cash (its $12,000 was not enough), on chain
    # in that order; three payments ($27,077.49) are held back from the proceeds for the reserve
    assert loan.reserve_funded == Decimal("27077.49")
    books = balances()
    assert {code: books[code] for code in books if not code.startswith("usdai:")} == {
        f"principal:{loan.pk}": Decimal("100000.000000"),
        "vault_cash": Decimal("0.000000"),  # 120,000 − 108,000 + 88,000 − 100,000
        "tbill_holdings": Decimal("20000.000000"),
        "susdai_holders": Decimal("-120000.000000"),
        f"reserve:{loan.pk}": Decimal("-27077.490000"),
        "gateway_clearing": Decimal("27077.490000"),  # the reserve's cash, held by the platform
    }
    recall, deploy = (
        ChainOp.objects.get(key=f"loan:{loan.pk}:tbill-recall"),
        ChainOp.objects.get(key=f"loan:{loan.pk}:deploy"),
    )
    assert (recall.function, recall.args, deploy.function, deploy.args) == (
        "recall",
        [str(88000 * 10**18)],
        "deploy",
        [str(100000 * 10**18)],
    )
    assert recall.pk < deploy.pk
    entries = JournalEntry.objects.count()
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
    assert JournalEntry.objects.count() == entries


def test_a_loan_the_vault_cannot_fund_is_refused_and_nothing_is_written(owner, operator, collateral):
    # given a vault with $30,000 (of which $27,000 in T-bills) and an application for $50,000
    fund_vault(Decimal("30000.00"))
    vault_daily(today=NOW.date())
    loan = loan_apply(
        owner=owner.owner_membership.company, collateral=collateral, amount=Decimal("50000"), tenor_months=24, now=NOW
    )
    before = (balances(), JournalEntry.objects.count(), ChainOp.objects.count())

    # when an operator approves it, then it is refused with what the vault has
    with pytest.raises(ValidationError) as exc:
        loan_approve(loan=loan, operator=operator, now=NOW)
    assert exc.value.message_dict["loan"] == [
        "The vault cannot fund $50,000.00 now: $3,000.00 of its cash is free and $27,000.00 is in T-bills. "
        "Approve it once lenders have deposited more."
    ]
    # and nothing changed: no schedule, no pledge, no entry, no chain call
    loan.refresh_from_db()
    collateral.refresh_from_db()
    assert loan.status == Loan.Status.APPLIED and loan.instalments.count() == 0
    assert collateral.lien == Collateral.Lien.FREE
    assert (balances(), JournalEntry.objects.count(), ChainOp.objects.count()) == before


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

    fund_vault(Decimal("50000.00"))
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
    entry = JournalEntry.objects.get(key=f"loan:{loan.pk}:disbursement")
    entry_page = client.get(reverse("admin:financing_journalentry_change", args=[entry.pk])).content.decode()
    assert "disbursement" in entry_page and 'name="postings-0-amount"' not in entry_page
    first_payment = str(loan.instalments.first().payment)
    assert 'name="instalments-0-payment"' not in loan_page and first_payment in loan_page
    assert client_as(owner).get(reverse("admin:financing_loan_changelist")).status_code == 302
