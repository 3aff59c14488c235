"""The revenue waterfall: how one settlement's gross revenue is split. Pure.

Unfinanced server: platform fee → owner residual.
Financed server: platform fee → insurance premium → interest due →
principal due → debt-service reserve replenishment (the reserve is funded
at origination from the proceeds; revenue only refills what draws took) →
cash sweep (a share of what is left while DSCR is below target) → owner
residual. GPU rent reaches lenders before anything but fee and insurance.
A foreclosed loan takes everything after costs until it is recovered.

Each fee is a rate of the gross, rounded half-up to the micro-dollar; each
later line takes the lesser of what it needs and what is left; the owner's
residual is whatever remains, so the lines always sum to the gross exactly.
"""

from dataclasses import dataclass
from decimal import Decimal

from core import money

ZERO = Decimal(0)


@dataclass(frozen=True)
class Rates:
    platform_fee: Decimal = Decimal("0.05")
    insurance: Decimal = Decimal("0.01")
    sweep_share: Decimal = Decimal("0.50")
    dscr_target: Decimal = Decimal("1.25")


@dataclass(frozen=True)
class LoanNeeds:
    """What a financed server's loan still needs, at the moment of the split."""

    reserve_shortfall: Decimal = ZERO  # target reserve minus reserve balance (≥ 0)
    interest_due: Decimal = ZERO
    principal_due: Decimal = ZERO
    outstanding_principal: Decimal = ZERO  # caps the sweep
    dscr: Decimal | None = None  # None: not measured yet (no sweep)
    foreclosed: bool = False


LINES = ("platform_fee", "insurance", "interest", "principal", "reserve", "sweep", "owner")


def split(gross: Decimal, *, rates: Rates = Rates(), loan: LoanNeeds | None = None) -> dict[str, Decimal]:
    """Split ``gross`` into the waterfall's lines (every line present, summing to ``gross``)."""
    if gross < 0:
        raise ValueError("gross revenue cannot be negative")
    gross = money.usd(gross)
    out = dict.fromkeys(LINES, ZERO)
    left = gross

    def take(line: str, amount: Decimal) -> None:
        nonlocal left
        amount = max(ZERO, min(money.usd(amount), left))
        out[line] += amount
        left -= amount

    take("platform_fee", gross * rates.platform_fee)
    if loan is not None:
        take("insurance", gross * rates.insurance)
        if loan.foreclosed:
            take("interest", loan.interest_due)
            take("principal", loan.outstanding_principal)
        else:
            take("interest", loan.interest_due)
            take("principal", loan.principal_due)
            take("reserve", loan.reserve_shortfall)
            if loan.dscr is not None and loan.dscr < rates.dscr_target:
                remaining_principal = loan.outstanding_principal - out["principal"]
                take("sweep", min(left * rates.sweep_share, remaining_principal))
    out["owner"] = left
    return out
