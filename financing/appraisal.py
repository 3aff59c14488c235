"""Appraisal of GPU collateral. Pure.

Value = the lower of
(a) a depreciation value: declining balance from the purchase price,
    ``price × (1 − rate)^age``, never below ``price × floor``; and
(b) an income value: the trailing net rental revenue annualised, then valued
    as an annuity over the remaining useful life at a discount rate,
    ``A × (1 − (1 + d)^−L) / d``.
A server that has earned nothing is worth nothing to lend against: the
income approach is what makes GPU revenue the loan's security.
"""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from core.money import CENT

ZERO = Decimal(0)


@dataclass(frozen=True)
class Inputs:
    purchase_price: Decimal
    age_years: Decimal
    depreciation_rate: Decimal  # e.g. 0.20 a year
    residual_floor: Decimal  # e.g. 0.10 of the purchase price
    trailing_net_revenue: Decimal
    trailing_days: int
    useful_life_years: Decimal
    discount_rate: Decimal  # a year


@dataclass(frozen=True)
class Result:
    depreciated_value: Decimal
    income_value: Decimal
    remaining_life_years: Decimal
    value: Decimal


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def depreciated_value(price: Decimal, age_years: Decimal, rate: Decimal, floor: Decimal) -> Decimal:
    return _cents(max(price * (1 - rate) ** max(age_years, ZERO), price * floor))


def income_value(net_revenue: Decimal, days: int, remaining_years: Decimal, discount: Decimal) -> Decimal:
    if days <= 0 or remaining_years <= 0 or net_revenue <= 0:
        return ZERO.quantize(CENT)
    annual = net_revenue * 365 / days
    if discount == 0:
        return _cents(annual * remaining_years)
    return _cents(annual * (1 - (1 + discount) ** -remaining_years) / discount)


def appraise(inputs: Inputs) -> Result:
    remaining = max(inputs.useful_life_years - inputs.age_years, ZERO)
    depreciated = depreciated_value(
        inputs.purchase_price, inputs.age_years, inputs.depreciation_rate, inputs.residual_floor
    )
    income = income_value(inputs.trailing_net_revenue, inputs.trailing_days, remaining, inputs.discount_rate)
    return Result(depreciated, income, remaining, min(depreciated, income))
