"""Loan amortisation schedules. Pure.

Scheduled instalments use a monthly rate of APR / 12 (the convention of the
quoted schedules: $100,000 at 15 % over 12 months → $9,025.83 a month).
Interest actually charged accrues per second on outstanding principal (the
loan services do that); the schedule is the contract's plan. Amounts are
whole cents; the last instalment takes the rounding so principal sums exactly.
No instalment repays more than is left: on a small loan, cent rounding of the
level payment or of the fixed principal could otherwise overshoot the
balance and leave negative rows; once nothing is left, instalments are zero.
"""

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from core.money import CENT

FIXED_PAYMENT = "fixed_payment"
FIXED_PRINCIPAL = "fixed_principal"


@dataclass(frozen=True)
class Instalment:
    number: int
    payment: Decimal
    interest: Decimal
    principal: Decimal
    balance_after: Decimal


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def monthly_payment(principal: Decimal, apr: Decimal, months: int) -> Decimal:
    """The level payment of a fixed-payment loan: P·r / (1 − (1 + r)^−n)."""
    r = apr / 12
    if r == 0:
        return _cents(principal / months)
    return _cents(principal * r / (1 - (1 + r) ** -months))


def schedule(principal: Decimal, apr: Decimal, months: int, kind: str = FIXED_PAYMENT) -> list[Instalment]:
    if principal <= 0 or months <= 0 or apr < 0:
        raise ValueError("principal and months must be positive, APR not negative")
    r = apr / 12
    level = monthly_payment(principal, apr, months)
    fixed_principal = _cents(principal / months)
    balance = principal
    rows = []
    for n in range(1, months + 1):
        interest = _cents(balance * r)
        if n == months:
            part = balance
        elif kind == FIXED_PAYMENT:
            part = level - interest
        elif kind == FIXED_PRINCIPAL:
            part = fixed_principal
        else:
            raise ValueError(f"unknown schedule kind {kind!r}")
        part = max(min(part, balance), Decimal(0))
        balance -= part
        rows.append(Instalment(n, interest + part, interest, part, balance))
    return rows


def largest_payment(principal: Decimal, apr: Decimal, months: int, kind: str = FIXED_PAYMENT) -> Decimal:
    """The most any one instalment asks (the first of a fixed-principal schedule)."""
    return max(row.payment for row in schedule(principal, apr, months, kind))


def max_principal(payment: Decimal, apr: Decimal, months: int, kind: str = FIXED_PAYMENT) -> Decimal:
    """The largest principal, in whole cents, whose every instalment is at most ``payment``:
    the level-payment (or first fixed-principal) formula inverted, then corrected by the
    cent for the schedule's own rounding."""
    if payment <= 0 or months <= 0:
        return Decimal("0.00")
    r = apr / 12
    if kind == FIXED_PRINCIPAL:
        estimate = payment / (Decimal(1) / months + r)
    elif r == 0:
        estimate = payment * months
    else:
        estimate = payment * (1 - (1 + r) ** -months) / r
    principal = estimate.quantize(CENT, rounding=ROUND_DOWN)
    while principal > 0 and largest_payment(principal, apr, months, kind) > payment:
        principal -= CENT
    while largest_payment(principal + CENT, apr, months, kind) <= payment:
        principal += CENT
    return max(principal, Decimal("0.00"))
