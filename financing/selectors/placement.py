"""Collateral-aware placement's one input from financing: how many GPUs each financed server must rent."""

from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from financing.models import Instalment, Loan

# Hours in an average month: instalments are monthly.
HOURS_PER_MONTH = Decimal(365 * 24) / 12


def placement_needs(server_ids, *, now: datetime | None = None) -> dict[int, float]:
    """GPUs each financed server must have rented, continuously, for its loan's debt service at DSCR 1.0.

    The debt service is the next instalment (the schedule's payment when none is left). What reaches the
    loan from one GPU-hour is the listing's price after the platform fee and the insurance premium, the
    lines the waterfall takes before interest and principal (``financing.waterfall.split``). So
    need = payment / (price × (1 − fee − insurance) × hours in a month). Servers without a live loan, or
    without a priced listing, are absent. One query for every loan (not ``loan_summary`` per loan): the
    placement engine refreshes it every minute or so, and knows nothing of loans.
    """
    now = now or timezone.now()
    next_payment = Instalment.objects.filter(loan=OuterRef("pk"), due__gt=now).order_by("number").values("payment")[:1]
    rows = (
        Loan.objects.filter(
            collateral__server_id__in=set(server_ids),
            status__in=[Loan.Status.ACTIVE, Loan.Status.DEFAULTED, Loan.Status.FORECLOSED],
        )
        .annotate(next_payment=Subquery(next_payment))
        .values_list(
            "collateral__server_id",
            "next_payment",
            "scheduled_payment",
            "collateral__server__listing__price_per_gpu_hour",
        )
    )
    reaching = 1 - settings.WATERFALL_PLATFORM_FEE - settings.WATERFALL_INSURANCE
    needs: dict[int, float] = {}
    for server_id, next_payment, scheduled, price in rows:
        payment = next_payment if next_payment is not None else scheduled
        if not payment or not price or reaching <= 0:
            continue
        needs[server_id] = needs.get(server_id, 0.0) + float(payment / (price * reaching * HOURS_PER_MONTH))
    return needs
