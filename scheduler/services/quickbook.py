"""Quick book: "N GPUs of model X, now, for H hours" — the placement engine picks the server.

Candidates are the listings that can take the request now on a ready node of
a connected cluster; the engine's "ours" policy packs them (best fit within
the models asked for, cheapest first among equals) and favours servers whose
loans need revenue, with the weights financing supplies. The chosen listing
is then booked like any other; a lost race moves on to the next choice.
"""

from datetime import datetime, timedelta
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.models import User
from core.errors import ConflictError
from marketplace.models import Booking, GpuModel, Region
from marketplace.services import bookings as booking_services
from scheduler import placement, selectors

MAX_ATTEMPTS = 3


def quick_book(
    *,
    renter: User,
    gpu_count: int,
    gpu_models: list[GpuModel],
    hours: int,
    price_cap: Decimal | None = None,
    region: Region | None = None,
    now: datetime | None = None,
) -> Booking:
    """Hold the best server for the request (awaiting payment), or say why none fits."""
    now = now or timezone.now()
    start = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    end = start + timedelta(hours=hours)
    nodes, free, by_server = selectors.placement_candidates(
        gpu_count=gpu_count,
        gpu_model_ids=tuple(m.pk for m in gpu_models),
        price_cap=price_cap,
        start=start,
        end=end,
    )
    request = placement.Request(
        gpu_count=gpu_count,
        models=frozenset(m.name for m in gpu_models) or None,
        price_cap=price_cap,
        region=region.code if region else None,
    )
    weights = selectors.collateral_weights(by_server)
    for _ in range(MAX_ATTEMPTS):
        chosen = placement.choose(request, nodes, free, policy="ours", weights=weights)
        if chosen is None:
            break
        try:
            return booking_services.booking_create(
                renter=renter, listing=by_server[chosen], gpu_count=gpu_count, start=start, end=end, now=now
            )
        except ConflictError:
            free[chosen] = 0  # taken meanwhile: the next best
    raise ValidationError(
        {
            "gpu_count": f"No server can run {gpu_count} GPU(s) of that kind now for {hours} h; try fewer GPUs, "
            "another model or a higher price cap."
        }
    )
