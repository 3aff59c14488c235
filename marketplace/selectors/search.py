"""GPU search: which listings can give N GPUs on one server, at what price.

Built to stay fast at 10k servers / 60k GPUs: every filter is a column of
``Listing`` (denormalised model and in-service count) or of its server and
model, served by indexes; the window check asks two questions that touch
only the rows that matter: which servers already have GPUs held in the
window (usually few, one grouped query), and whether a merged availability
slot covers the window (an indexed EXISTS, only for listings with rules).
"""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from marketplace.models import AvailabilitySlot, BookingGpu, Listing

# Up to this many busy servers in the window are excluded by an inline list;
# beyond it a correlated subquery is cheaper than a huge OR.
BUSY_INLINE_LIMIT = 200

SORTS = {
    "price": ("price_per_gpu_hour", "-server__reliability", "id"),
    "-price": ("-price_per_gpu_hour", "-server__reliability", "id"),
    "reliability": ("-server__reliability", "price_per_gpu_hour", "id"),
    "vram": ("-gpu_model__vram_gb", "price_per_gpu_hour", "id"),
}


@dataclass(frozen=True)
class SearchQuery:
    gpu_models: tuple[int, ...] = ()
    gpu_count: int = 1
    min_vram_gb: int | None = None
    region: str = ""
    max_price: Decimal | None = None
    min_reliability: Decimal | None = None
    start: datetime | None = None
    end: datetime | None = None
    sort: str = "price"
    extra: dict = field(default_factory=dict, compare=False)


def listing_search(query: SearchQuery) -> QuerySet[Listing]:
    listings = Listing.objects.filter(status=Listing.Status.ACTIVE, gpus_in_service__gte=max(query.gpu_count, 1))
    if query.gpu_models:
        listings = listings.filter(gpu_model_id__in=query.gpu_models)
    if query.min_vram_gb:
        listings = listings.filter(gpu_model__vram_gb__gte=query.min_vram_gb)
    if query.region:
        listings = listings.filter(server__region__code=query.region)
    if query.max_price is not None:
        listings = listings.filter(price_per_gpu_hour__lte=query.max_price)
    if query.min_reliability is not None:
        listings = listings.filter(server__reliability__gte=query.min_reliability)
    if query.start and query.end:
        listings = _free_in_window(listings, query)
    return listings.select_related("server__region", "gpu_model").order_by(*SORTS.get(query.sort, SORTS["price"]))


def _free_in_window(listings: QuerySet[Listing], query: SearchQuery) -> QuerySet[Listing]:
    busy = (
        BookingGpu.objects.filter(held=True, start__lt=query.end, end__gt=query.start)
        .values("server_id")
        .annotate(n=Count("gpu_id", distinct=True))
    )
    # A server is too busy when in-service GPUs minus held ones fall below N.
    rows = list(busy[: BUSY_INLINE_LIMIT + 1])
    if len(rows) <= BUSY_INLINE_LIMIT:
        too_busy = Q()
        for row in rows:
            too_busy |= Q(server_id=row["server_id"], gpus_in_service__lt=query.gpu_count + row["n"])
        if too_busy:
            listings = listings.exclude(too_busy)
    else:
        held = Subquery(busy.filter(server_id=OuterRef("server_id")).values("n")[:1])
        listings = listings.annotate(held=Coalesce(held, 0)).filter(gpus_in_service__gte=F("held") + query.gpu_count)
    covering = AvailabilitySlot.objects.filter(listing=OuterRef("pk"), start__lte=query.start, end__gte=query.end)
    return listings.filter(Q(always_available=True) | Exists(covering))
