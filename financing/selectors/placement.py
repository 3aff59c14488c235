"""Collateral-aware placement's one input from financing: how much each financed server's loan needs revenue."""

from datetime import datetime
from decimal import Decimal

from django.conf import settings

from financing.models import Loan
from financing.selectors.loans import loan_summary


def placement_weights(server_ids, *, now: datetime | None = None) -> dict[int, float]:
    """How much each financed server's loan needs revenue, for collateral-aware placement.

    0 for a server whose loan covers its debt service at the target DSCR or
    better, rising to 1 as coverage falls to nothing; servers without a live
    loan are absent. The scheduler passes this plain mapping to its placement
    engine, which knows nothing of loans.
    """
    target = settings.WATERFALL_DSCR_TARGET
    loans = Loan.objects.filter(
        collateral__server_id__in=set(server_ids),
        status__in=[Loan.Status.ACTIVE, Loan.Status.DEFAULTED, Loan.Status.FORECLOSED],
    ).select_related("collateral__server")
    weights = {}
    for loan in loans:
        dscr = loan_summary(loan, now=now).dscr
        need = Decimal(1) if dscr is None else max(Decimal(0), (target - dscr) / target)
        weights[loan.collateral.server_id] = float(min(need, Decimal(1)))
    return weights
