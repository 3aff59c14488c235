"""Loan servicing: interest accrual and what a loan needs from revenue.

Interest accrues per second, simple, on outstanding principal:
``principal × APR × seconds / (365 × 86,400)``, rounded half-up to the
micro-dollar and posted (Dr the loan's interest receivable, Cr interest
income) up to the moment revenue is applied. What the loan needs then:

- reserve: ``LOAN_RESERVE_MONTHS`` (3) of the next scheduled payments, less
  what the reserve holds;
- interest: everything accrued and unpaid;
- principal: the scheduled principal of every instalment due up to and
  including the next one, less principal already repaid (revenue during the
  month pays the coming instalment down as it arrives);
- DSCR: trailing 90-day net revenue over the next 3 scheduled payments.
"""

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db.models import Sum

from financing import waterfall
from financing.models import Loan
from financing.selectors import account_balance
from financing.services.collateral import trailing_net_revenue
from financing.services.ledger import Line, journal_post, system_account
from financing.services.loans import loan_account
from marketplace.money import MICRO

SECONDS_PER_YEAR = Decimal(365 * 24 * 3600)
LIVE = (Loan.Status.ACTIVE, Loan.Status.DEFAULTED, Loan.Status.FORECLOSED)


def loan_for_server(server_id: int) -> Loan | None:
    return (
        Loan.objects.filter(collateral__server_id=server_id, status__in=LIVE)
        .select_related("collateral__server", "owner")
        .first()
    )


def interest_accrue(*, loan: Loan, until: datetime) -> Decimal:
    """Post interest from ``loan.interest_accrued_to`` to ``until`` (the caller holds the loan's row lock)."""
    start = loan.interest_accrued_to
    if start is None or until <= start:
        return Decimal(0)
    outstanding = account_balance(loan_account(loan, "principal"))
    seconds = Decimal((until - start).total_seconds())
    amount = (outstanding * loan.apr * seconds / SECONDS_PER_YEAR).quantize(MICRO, rounding=ROUND_HALF_UP)
    if amount > 0:
        journal_post(
            key=f"loan:{loan.pk}:accrual:{until.isoformat()}",
            description=f"Interest on loan {loan.public_id}, {start:%Y-%m-%d %H:%M:%S} to {until:%Y-%m-%d %H:%M:%S}",
            lines=[
                Line(loan_account(loan, "interest"), amount, "accrual"),
                Line(system_account("interest_income"), -amount, "accrual"),
            ],
        )
    Loan.objects.filter(pk=loan.pk).update(interest_accrued_to=until)
    loan.interest_accrued_to = until
    return amount


def loan_needs(*, loan: Loan, at: datetime) -> waterfall.LoanNeeds:
    outstanding = account_balance(loan_account(loan, "principal"))
    repaid = loan.principal - outstanding
    upcoming = list(loan.instalments.filter(due__gt=at).order_by("number").values_list("payment", flat=True)[:3])
    if not upcoming:  # past the last instalment: the last ones are the ones to reserve for
        upcoming = list(loan.instalments.order_by("-number").values_list("payment", flat=True)[:1])
    next_due = loan.instalments.filter(due__gt=at).order_by("number").first()
    scheduled = loan.instalments.filter(number__lte=next_due.number if next_due else loan.tenor_months).aggregate(
        total=Sum("principal")
    )["total"] or Decimal(0)
    reserve_target = sum(upcoming[: settings.LOAN_RESERVE_MONTHS], Decimal(0))
    reserve_balance = -account_balance(loan_account(loan, "reserve"))  # a liability: credit balance
    debt_service = sum(upcoming[:3], Decimal(0))
    net = trailing_net_revenue(server=loan.collateral.server, until=at)
    return waterfall.LoanNeeds(
        reserve_shortfall=max(reserve_target - reserve_balance, Decimal(0)),
        interest_due=max(account_balance(loan_account(loan, "interest")), Decimal(0)),
        principal_due=max(scheduled - repaid, Decimal(0)),
        outstanding_principal=outstanding,
        dscr=(net / debt_service).quantize(Decimal("0.0001")) if debt_service else None,
        foreclosed=loan.status == Loan.Status.FORECLOSED,
    )


def repayment_lines(*, loan: Loan, parts: dict[str, Decimal]) -> list[Line]:
    """The loan's side of a settlement entry: reserve, interest and principal
    collected, the cash moved to the vault, the protocol's share of interest."""
    interest, principal = parts["interest"], parts["principal"] + parts["sweep"]
    to_vault = interest + principal
    protocol = (interest * settings.LOAN_PROTOCOL_FEE).quantize(MICRO, rounding=ROUND_HALF_UP)
    return [
        Line(loan_account(loan, "reserve"), -parts["reserve"], "reserve"),
        Line(loan_account(loan, "interest"), -interest, "interest"),
        Line(loan_account(loan, "principal"), -principal, "principal"),
        Line(system_account("vault_cash"), to_vault, "to_vault"),
        Line(system_account("gateway_clearing"), -to_vault, "to_vault"),
        Line(system_account("interest_income"), protocol, "protocol_fee"),
        Line(system_account("protocol_fee"), -protocol, "protocol_fee"),
    ]
