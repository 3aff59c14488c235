"""What the marketplace says about a server's earning power, for its appraisal.

Reads only: the server's GPUs and listing, the model's live listings by other
owners (the going rate) and the model's booked and available GPU-hours over
the trailing window (the platform's utilisation). ``financing.appraisal``
turns these facts into a value; the service stores both.
"""

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import DurationField, ExpressionWrapper, F, Sum, Value
from django.db.models.functions import Greatest, Least

from core import money
from financing.selectors.loans import TRAILING_DAYS
from marketplace.models import AvailabilitySlot, BookingGpu, Gpu, Listing, Server, Settlement

IN_SERVICE = (Gpu.Status.AVAILABLE, Gpu.Status.MAINTENANCE)
HOUR = Decimal(3600)


@dataclass(frozen=True)
class MarketFacts:
    gpu_model: str  # "" when the server has no GPU in service
    gpu_count: int  # GPUs neither failed nor retired
    market_prices: tuple[Decimal, ...]  # other owners' live listings of the model, per GPU-hour
    listed_rate: Decimal | None  # the server's own listing
    booked_gpu_hours: Decimal  # the model's, in the window
    available_gpu_hours: Decimal
    history_days: int  # days of the window the server has been on the market
    trailing_gross_revenue: Decimal  # the server's, delivered in the window
    window_days: int


def _hours(delta: timedelta | None) -> Decimal:
    return (Decimal(delta.total_seconds()) / HOUR) if delta else Decimal(0)


def _overlap(start: datetime, end: datetime, since: datetime, until: datetime) -> timedelta:
    lo, hi = max(start, since), min(end, until)
    return hi - lo if hi > lo else timedelta(0)


def model_gpu_hours(*, model_id: int, since: datetime, until: datetime) -> tuple[Decimal, Decimal]:
    """(booked, available) GPU-hours of a GPU model over [since, until).

    Available: each listing of the model, from when it was listed (or
    ``since``), times its GPUs in service, within its availability windows
    when it has any. Booked: the GPU time renters held on those servers (live
    and finished bookings; released holds never counted), as the owner's
    utilisation page counts it. Listings keep no history of pauses or of GPUs
    taken out of service, so a listing counts with its current GPUs in service.
    """
    listings = list(
        Listing.objects.filter(gpu_model_id=model_id, created_at__lt=until).values_list(
            "pk", "server_id", "created_at", "gpus_in_service", "always_available"
        )
    )
    slots: dict[int, list[tuple[datetime, datetime]]] = {}
    for listing_id, start, end in AvailabilitySlot.objects.filter(
        listing_id__in=[row[0] for row in listings if not row[4]], start__lt=until, end__gt=since
    ).values_list("listing_id", "start", "end"):
        slots.setdefault(listing_id, []).append((start, end))
    available = Decimal(0)
    for pk, _, created_at, in_service, always in listings:
        opened = max(created_at, since)
        if always:
            listed = _overlap(opened, until, since, until)
        else:
            listed = sum((_overlap(s, e, opened, until) for s, e in slots.get(pk, [])), timedelta(0))
        available += _hours(listed) * in_service
    held = BookingGpu.objects.filter(
        server_id__in=[row[1] for row in listings], held=True, start__lt=until, end__gt=since
    ).aggregate(
        total=Sum(
            ExpressionWrapper(
                Least(F("end"), Value(until)) - Greatest(F("start"), Value(since)), output_field=DurationField()
            )
        )
    )["total"]
    return _hours(held), available


def market_facts(*, server: Server, until: datetime, days: int = TRAILING_DAYS) -> MarketFacts:
    since = until - timedelta(days=days)
    gpus = list(server.gpus.filter(status__in=IN_SERVICE).select_related("model"))
    counts = Counter(gpu.model for gpu in gpus)
    model = max(counts, key=lambda m: (counts[m], m.name)) if counts else None
    listing = Listing.objects.filter(server=server).first()
    prices: tuple[Decimal, ...] = ()
    booked = available = Decimal(0)
    if model is not None:
        prices = tuple(
            Listing.objects.filter(
                gpu_model=model, status=Listing.Status.ACTIVE, gpus_in_service__gt=0, created_at__lte=until
            )
            .exclude(server__owner_id=server.owner_id)
            .order_by("price_per_gpu_hour")
            .values_list("price_per_gpu_hour", flat=True)
        )
        booked, available = model_gpu_hours(model_id=model.pk, since=since, until=until)
    # On the market since it was listed, or since its first booking if that is earlier.
    first_seen = [listing.created_at] if listing else []
    first_booked = BookingGpu.objects.filter(server=server, held=True).order_by("start").values_list("start", flat=True)
    first_seen += list(first_booked[:1])
    history = 0
    if first_seen:
        history = min(max((until - min(first_seen)) // timedelta(days=1), 0), days)
    gross = money.sum_of(
        Settlement.objects.filter(server=server, interval_end__gt=since, interval_end__lte=until), "gross_amount"
    )
    return MarketFacts(
        gpu_model=model.name if model else "",
        gpu_count=len(gpus),
        market_prices=prices,
        listed_rate=listing.price_per_gpu_hour if listing else None,
        booked_gpu_hours=booked.quantize(Decimal("0.01")),
        available_gpu_hours=available.quantize(Decimal("0.01")),
        history_days=history,
        trailing_gross_revenue=gross,
        window_days=days,
    )
