"""A financed server's revenue through the waterfall: a worked example, every balance written out."""

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest

from financing.models import JournalEntry
from financing.selectors.ledger import balances
from financing.services.revenue import settlements_journal
from tests.financing_fixtures import T0, settle

pytestmark = pytest.mark.django_db
MICRO = Decimal("0.000001")


def test_worked_example_revenue_repays_the_loan(loan, renter):
    # given a $12,000 loan at 15 % over 12 months: $1,083.10 a month; 3 payments ($3,249.30) were held
    # back from the proceeds for the reserve, from a vault a lender funded with $20,000
    assert loan.instalments.first().payment == Decimal("1083.10")
    assert loan.reserve_funded == Decimal("3249.30")
    lid, owner = loan.pk, loan.owner.pk
    lender_usdai = next(code for code in balances() if code.startswith("usdai:"))

    # when $4,000 of revenue is settled 10 days after disbursement
    settle(loan, renter, "4000.00", T0 + timedelta(days=10))
    settlements_journal()

    # then: 5 % fee 200, 1 % insurance 40, interest accrued over 10 days (12,000 × 15 % × 10/365 =
    # 49.315068), instalment 1's principal (933.10), nothing to the reserve (it is full); DSCR is
    # 3,800 net / 3,249.30 = 1.17 < 1.25, so half of the rest sweeps principal and half is the owner's
    interest = (Decimal("12000") * Decimal("0.15") * 10 / 365).quantize(MICRO, rounding=ROUND_HALF_UP)
    assert interest == Decimal("49.315068")
    left = Decimal("4000") - 200 - 40 - interest - Decimal("933.10")
    sweep = (left / 2).quantize(MICRO, rounding=ROUND_HALF_UP)
    assert (left, sweep) == (Decimal("2777.584932"), Decimal("1388.792466"))
    principal = Decimal("933.10") + sweep
    protocol = (interest * Decimal("0.10")).quantize(MICRO, rounding=ROUND_HALF_UP)
    assert balances() == {
        f"interest:{lid}": Decimal("0.000000"),  # accrued 49.315068, collected 49.315068
        "interest_income": -(interest - protocol),  # the vault's 90 % of interest
        "protocol_fee": -protocol,  # 4.931507
        "insurance_payable": Decimal("-40.000000"),
        "platform_revenue": Decimal("-200.000000"),
        f"principal:{lid}": Decimal("12000") - principal,  # 9,678.107534 outstanding
        f"reserve:{lid}": Decimal("-3249.300000"),  # held back at origination
        f"owner_payable:{owner}": -(left - sweep),  # 1,388.792466
        "vault_cash": Decimal("20000") - 12000 + interest - protocol + principal,  # net of the protocol fee
        "susdai_holders": Decimal("-20000.000000"),
        lender_usdai: Decimal("0.000000"),  # bought 20,000 USDai and deposited it all
        # the reserve held back, less the cash moved from the gateway to the vault
        "gateway_clearing": Decimal("3249.30") - (interest - protocol + principal),
        "renter_escrow": Decimal("4000.000000"),  # no payment journaled in this example
    }
    assert sum(balances().values()) == 0

    # when a second $2,000 arrives 20 days after disbursement: instalment 1 is paid already and
    # DSCR is 5,700 / 3,249.30 = 1.75, so after fees and 10 more days of interest the owner gets the rest
    settle(loan, renter, "2000.00", T0 + timedelta(days=20))
    settlements_journal()
    interest2 = ((Decimal("12000") - principal) * Decimal("0.15") * 10 / 365).quantize(MICRO, rounding=ROUND_HALF_UP)
    owner_share = Decimal("2000") - 100 - 20 - interest2
    books = balances()
    assert books[f"principal:{lid}"] == Decimal("12000") - principal
    assert books[f"owner_payable:{owner}"] == -(left - sweep) - owner_share
    assert books[f"reserve:{lid}"] == Decimal("-3249.300000")
    assert sum(books.values()) == 0
    assert JournalEntry.objects.filter(settlement__isnull=False).count() == 2


@pytest.mark.parametrize("span_days", [1, 120])
def test_the_loan_books_trailing_revenue_equals_the_direct_sum(loan, renter, span_days):
    from financing.selectors.loans import trailing_net_revenue
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


def test_interest_that_arrives_after_the_days_run_counts_on_the_day_it_was_earned(loan, renter):
    # given the vault's daily run today, before any interest has come in
    from datetime import UTC, datetime, time

    from django.conf import settings
    from django.utils import timezone

    from financing.models import VaultDay
    from financing.selectors.vault import realised_apr
    from financing.services.vault import vault_daily

    today = timezone.localdate()
    run = datetime.combine(today, time(0, 5), tzinfo=UTC)  # the daily run, five past midnight
    vault_daily(today=today, now=run)
    assert VaultDay.objects.get(date=today).income == 0

    # when rent for usage that ended at noon today pays the loan's interest, journaled after the run
    noon = datetime.combine(today, time(12), tzinfo=UTC)
    settle(loan, renter, "4000.00", noon)
    settlements_journal()
    seconds = Decimal((noon - T0).total_seconds())
    interest = (Decimal("12000") * Decimal("0.15") * seconds / (365 * 86400)).quantize(MICRO, rounding=ROUND_HALF_UP)
    to_vault = interest - (interest * settings.LOAN_PROTOCOL_FEE).quantize(MICRO, rounding=ROUND_HALF_UP)

    # then tomorrow's run counts it in today's income, with the T-bill interest that run posts for
    # the day since today's run ($6,000 bought then × 4.5 % / 365); tomorrow has earned nothing yet
    tomorrow = today + timedelta(days=1)
    tbill_interest = vault_daily(today=tomorrow, now=run + timedelta(days=1))["tbill_interest"]
    assert tbill_interest == (Decimal("6000") * Decimal("0.045") / 365).quantize(MICRO, rounding=ROUND_HALF_UP)
    day = VaultDay.objects.get(date=today)
    assert day.income == to_vault + tbill_interest
    assert VaultDay.objects.get(date=tomorrow).income == 0
    # and lenders see today's income over today's NAV, annualised (tomorrow, still coming in, is left out)
    expected = ((to_vault + tbill_interest) / day.nav * 365).quantize(Decimal("0.0001"))
    assert realised_apr(days=7, today=tomorrow) == expected > 0
    assert realised_apr(days=7, today=today) is None  # no complete day yet
