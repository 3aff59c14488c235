"""Money: one quantum and one rounding mode per use, in one place.

USD amounts in the ledger carry 6 decimal places (micro-dollars: per-second
billing needs them). Prices and charges are whole cents, because card
payments are. Conversion to Stripe's integer cents happens only in the
gateway adapter, through ``to_cents``; to chain wei only in the chain
adapter. sUSDai shares carry 18 decimals (``SHARE``), as on chain.

``sum_of`` is the one way to total a column: a queryset's ``Sum`` as a
``Decimal``, zero when there are no rows.
"""

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from django.db.models import Sum

MICRO = Decimal("0.000001")
CENT = Decimal("0.01")
SHARE = Decimal(10) ** -18
ZERO = Decimal("0")
ROUNDING = ROUND_HALF_UP


def usd(value) -> Decimal:
    """A ledger amount: quantized to micro-dollars, half-up."""
    return Decimal(value).quantize(MICRO, rounding=ROUNDING)


def cents(value) -> Decimal:
    """A charge amount: quantized to cents, half-up."""
    return Decimal(value).quantize(CENT, rounding=ROUNDING)


def cents_down(value) -> Decimal:
    """Whole cents, never more than ``value`` (refunds of a partial amount)."""
    return Decimal(value).quantize(CENT, rounding=ROUND_DOWN)


def to_cents(amount: Decimal) -> int:
    """Integer cents for a payment gateway; refuses a fraction of a cent."""
    value = Decimal(amount) * 100
    if value != value.to_integral_value():
        raise ValueError(f"{amount} is not a whole number of cents")
    return int(value)


def from_cents(value: int) -> Decimal:
    return (Decimal(value) / 100).quantize(CENT)


def pro_rata(total: Decimal, part: int, whole: int) -> Decimal:
    """``total × part / whole`` in micro-dollars, rounded down so that the sum of
    cumulative shares never exceeds ``total``; ``part == whole`` gives ``total``."""
    if whole <= 0:
        raise ValueError("whole must be positive")
    part = max(0, min(part, whole))
    if part == whole:
        return usd(total)
    return (Decimal(total) * part / whole).quantize(MICRO, rounding=ROUND_DOWN)


def sum_of(queryset, field: str = "amount") -> Decimal:
    """``SUM(field)`` over the queryset as a ``Decimal`` (zero for no rows), unrounded."""
    return Decimal(queryset.aggregate(total=Sum(field))["total"] or 0)
