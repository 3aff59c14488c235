"""Appraisal of GPU collateral. Pure: inputs in, result out (the market's figures
are gathered by ``financing.selectors.underwriting``, settings by the service).

Value = the lower of

(a) a **depreciation value**: declining balance from the purchase price at a rate
    per GPU model (``APPRAISAL_DEPRECIATION_RATES``; unknown models take
    ``APPRAISAL_DEPRECIATION_RATE``), ``price × (1 − rate)^age``, never below
    ``price × floor``; and
(b) an **income value**: a year's net operating income valued as an annuity over
    the remaining useful life ``L = life − age`` at the discount rate ``d``,
    ``A × (1 − (1 + d)^−L) / d``.

Net operating income is what rent leaves once the platform fee and insurance
(shares of gross, as the waterfall takes them) and the operating cost of the
hardware (power and hosting, ``opex`` per GPU-hour by model,
``APPRAISAL_OPEX_RATES``, else ``APPRAISAL_OPEX_PER_GPU_HOUR``; paid every hour
of the year whether the GPU is rented or not: hosting is, and idle power is not
nothing) are paid. It comes from two sources:

- **trailing** (actual): what the server grossed in the trailing window
  (``W`` = 90 days), ``G``, of which it was on the market for ``h ≤ W`` days;
  annualised over those ``h`` days: ``T = (G × (1 − fee − ins) − opex × n × 24 × h) × 365 / h``;
- **forward**: the platform's own market for the model, for hardware without
  a record: ``net/GPU-hour = rate × utilisation × (1 − fee − ins) − opex`` and
  ``F = net/GPU-hour × n × 8,760`` (``n`` GPUs in service). The rate is the
  median live price of the model on the marketplace (other owners' listings,
  so that an owner cannot price its own collateral up; ``APPRAISAL_REFERENCE_RATES``
  when there is none, and the source says so), never above the server's own
  listed price. The utilisation is the platform's trailing figure for the
  model (booked over available GPU-hours in the window), at most
  ``APPRAISAL_UTILISATION_CAP``; ``APPRAISAL_UTILISATION_DEFAULT`` when the
  model had fewer than ``APPRAISAL_UTILISATION_MIN_GPU_HOURS`` on the market.

The annual income used is a credibility blend: ``A = (h / W) × T + (1 − h / W) × F``.
A careful lender counts the server's own record for the part of the window it
was on the market, and fills only the rest with the market assumption. This
is, term by term, the server's actual window net (``G × (1 − fee − ins) × 365 / W``),
plus the forward net for the days it was not yet listed, less the operating
cost of the days it was (the form computed, so that rent earned on a first,
partial day ``h = 0`` counts as well): actual earnings are never discounted in favour of an
assumption, a server that sat idle on the market for the whole window is
worth what it earned (often nothing), a new server is valued on the market
alone, and there is no cliff at day ``W`` where the assumption would drop away
at once. Taking the greater of trailing and forward instead would let a
server that has shown it does not rent borrow on the market's figure.

The value stays the lower of (a) and (b): income that cannot pay for the
hardware does not make it worth its price, and a price not supported by rent
does not make it collateral.
"""

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from core.money import CENT

ZERO = Decimal(0)
HOURS_A_YEAR = 365 * 24
RATE = Decimal("0.0001")  # rates per GPU-hour, utilisation, weights: 4 decimal places

TRAILING = "trailing"
FORWARD = "forward"
BLEND = "blend"


@dataclass(frozen=True)
class Inputs:
    purchase_price: Decimal
    age_years: Decimal
    depreciation_rate: Decimal  # a year, for the GPU model
    residual_floor: Decimal  # of the purchase price
    useful_life_years: Decimal
    discount_rate: Decimal  # a year
    gpu_count: int  # in service
    trailing_gross_revenue: Decimal  # delivered in the window
    trailing_days: int  # the window, W
    history_days: int  # days of the window the server was on the market, h
    rate: Decimal  # per GPU-hour
    utilisation: Decimal  # 0–1
    platform_fee: Decimal  # of gross
    insurance_rate: Decimal  # of gross
    opex_per_gpu_hour: Decimal


@dataclass(frozen=True)
class Result:
    depreciated_value: Decimal
    remaining_life_years: Decimal
    net_per_gpu_hour: Decimal  # forward, exact
    forward_annual_income: Decimal  # F, exact
    trailing_annual_income: Decimal | None  # T, exact; None without history
    trailing_weight: Decimal  # h / W
    annual_net_income: Decimal  # A, cents
    forward_income_value: Decimal
    trailing_income_value: Decimal  # 0 without history
    income_value: Decimal
    income_approach: str  # trailing, forward or blend
    value: Decimal


def _cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def depreciated_value(price: Decimal, age_years: Decimal, rate: Decimal, floor: Decimal) -> Decimal:
    return _cents(max(price * (1 - rate) ** max(age_years, ZERO), price * floor))


def annuity_value(annual: Decimal, remaining_years: Decimal, discount: Decimal) -> Decimal:
    """A level annual income over ``remaining_years``, discounted; 0 when there is none."""
    if remaining_years <= 0 or annual <= 0:
        return ZERO.quantize(CENT)
    if discount == 0:
        return _cents(annual * remaining_years)
    return _cents(annual * (1 - (1 + discount) ** -remaining_years) / discount)


def income_value(net_revenue: Decimal, days: int, remaining_years: Decimal, discount: Decimal) -> Decimal:
    """The annuity value of ``net_revenue`` earned over ``days``, annualised."""
    if days <= 0:
        return ZERO.quantize(CENT)
    return annuity_value(net_revenue * 365 / days, remaining_years, discount)


def model_entry(model: str, table: dict[str, Decimal]) -> tuple[str, Decimal] | None:
    """The entry of a per-model settings table whose key is the longest that the model's
    name contains (``H100`` for "H100 80GB"), or None."""
    name = (model or "").upper()
    for key in sorted(table, key=len, reverse=True):
        if key.upper() in name:
            return key, Decimal(table[key])
    return None


def model_rate(model: str, rates: dict[str, Decimal], default: Decimal) -> tuple[Decimal, str]:
    """The model's rate from a per-model table (depreciation, operating cost), else
    ``default``; with where it came from."""
    entry = model_entry(model, rates)
    if entry is None:
        return default, f"default rate ({model or 'no GPU model'} is not in the table)"
    return entry[1], f"{entry[0]} rate"


def median(values: list[Decimal]) -> Decimal:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def rate_assumption(
    *,
    model: str,
    market_prices: list[Decimal],
    reference_rate: Decimal | None,
    listed_rate: Decimal | None,
) -> tuple[Decimal, Decimal, str]:
    """(market rate, rate used, source). The market rate is the median of the
    other owners' live listings of the model, or the reference rate when there
    are none; the rate used is never above the server's own listed price (it
    rents at that price, not the market's)."""
    if market_prices:
        market = median(market_prices).quantize(RATE, rounding=ROUND_HALF_UP)
        count = len(market_prices)
        source = f"median of {count} live {model} listing{'s' if count != 1 else ''} by other owners"
    elif reference_rate is not None:
        market = Decimal(reference_rate).quantize(RATE, rounding=ROUND_HALF_UP)
        source = f"reference rate: no live {model} listing by another owner on the market"
    else:
        market = ZERO.quantize(RATE)
        source = f"none: no live {model or 'GPU'} listing on the market and no reference rate for the model"
    if listed_rate is not None and listed_rate < market:
        return market, Decimal(listed_rate).quantize(RATE), f"the server's listed price, below the market's ({source})"
    return market, market, source


def utilisation_assumption(
    *,
    model: str,
    booked_gpu_hours: Decimal,
    available_gpu_hours: Decimal,
    minimum_gpu_hours: Decimal,
    cap: Decimal,
    default: Decimal,
    days: int,
) -> tuple[Decimal | None, Decimal, str]:
    """(trailing utilisation, utilisation used, source): the platform's trailing
    figure for the model (rounded down), at most ``cap``; ``default`` when the
    model was available for fewer than ``minimum_gpu_hours`` in the window."""
    if available_gpu_hours < minimum_gpu_hours or available_gpu_hours <= 0:
        return (
            None,
            min(default, cap),
            f"default: {model or 'the model'} had {available_gpu_hours:,.0f} GPU-hours on the market in the last "
            f"{days} days, fewer than the {minimum_gpu_hours:,.0f} needed to measure",
        )
    trailing = min(booked_gpu_hours / available_gpu_hours, Decimal(1)).quantize(RATE, rounding=ROUND_DOWN)
    measured = f"{booked_gpu_hours:,.0f} of {available_gpu_hours:,.0f} {model} GPU-hours booked in the last {days} days"
    if trailing > cap:
        return trailing, cap, f"cap: the platform's {trailing:.2%} ({measured}) is above the {cap:.0%} cap"
    return trailing, trailing, f"the platform's trailing figure ({measured})"


def appraise(inputs: Inputs) -> Result:
    remaining = max(inputs.useful_life_years - inputs.age_years, ZERO)
    depreciated = depreciated_value(
        inputs.purchase_price, inputs.age_years, inputs.depreciation_rate, inputs.residual_floor
    )
    keep = 1 - inputs.platform_fee - inputs.insurance_rate
    gpus = max(inputs.gpu_count, 0)
    net_per_gpu_hour = inputs.rate * inputs.utilisation * keep - inputs.opex_per_gpu_hour
    forward = net_per_gpu_hour * gpus * HOURS_A_YEAR
    window = max(inputs.trailing_days, 1)
    history = min(max(inputs.history_days, 0), window)
    weight = Decimal(history) / window
    # (h/W)·T + (1 − h/W)·F, expanded so that revenue earned in a first, partial day counts too.
    opex_a_year = inputs.opex_per_gpu_hour * gpus * HOURS_A_YEAR
    actual = inputs.trailing_gross_revenue * keep * 365 / window
    annual = _cents(actual - weight * opex_a_year + (1 - weight) * forward)
    trailing = actual * window / history - opex_a_year if history else None
    income = annuity_value(annual, remaining, inputs.discount_rate)
    approach = FORWARD if history == 0 else TRAILING if history == window else BLEND
    return Result(
        depreciated_value=depreciated,
        remaining_life_years=remaining,
        net_per_gpu_hour=net_per_gpu_hour,
        forward_annual_income=forward,
        trailing_annual_income=trailing,
        trailing_weight=weight.quantize(RATE, rounding=ROUND_HALF_UP),
        annual_net_income=annual,
        forward_income_value=annuity_value(forward, remaining, inputs.discount_rate),
        trailing_income_value=annuity_value(trailing, remaining, inputs.discount_rate) if trailing else _cents(ZERO),
        income_value=income,
        income_approach=approach,
        value=min(depreciated, income),
    )
