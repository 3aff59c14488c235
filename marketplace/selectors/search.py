"""GPU search: which listings can give N GPUs on one server, at what price.

Built to stay fast at 10k servers / 60k GPUs: every filter is a column of
``Listing`` (denormalised model and in-service count) or of its server and
model, served by indexes; the window check asks two questions that touch
only the rows that matter: which servers already have GPUs held in the
window (usually few, one grouped query), and whether a merged availability
slot contains the window (a GiST range index on PostgreSQL).
"""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.contrib.postgres.fields import DateTimeRangeField
from django.db import connection
from django.db.backends.postgresql.psycopg_any import DateTimeTZRange
from django.db.models import Count, F, Func, OuterRef, Q, QuerySet, Subquery

from marketplace.models import AvailabilitySlot, BookingGpu, Listing

SORTS = {
    "price": ("price_per_gpu_hour", "-reliability", "id"),
    "-price": ("-price_per_gpu_hour", "-reliability", "id"),
    "reliability": ("-reliability", "price_per_gpu_hour", "id"),
    "vram": ("-vram_gb", "price_per_gpu_hour", "id"),
}


@dataclass(frozen=True)
class SearchQuery:
    gpu_models: tuple[int, ...] = ()
    gpu_count: int = 1
    min_vram_gb: int | None = None
    region_id: int | None = None
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
        listings = listings.filter(vram_gb__gte=query.min_vram_gb)
    if query.region_id:
        listings = listings.filter(region_id=query.region_id)
    if query.max_price is not None:
        listings = listings.filter(price_per_gpu_hour__lte=query.max_price)
    if query.min_reliability is not None:
        listings = listings.filter(reliability__gte=query.min_reliability)
    if query.start and query.end:
        listings = _free_in_window(listings, query)
    return listings.select_related("region", "gpu_model", "server").order_by(*SORTS.get(query.sort, SORTS["price"]))


def _free_in_window(listings: QuerySet[Listing], query: SearchQuery) -> QuerySet[Listing]:
    # Servers left with fewer than N free GPUs by the holds in the window
    # (GROUP BY … HAVING, usually a handful of rows) are excluded in the same query.
    capacity = Listing.objects.filter(server_id=OuterRef("server_id")).order_by().values("gpus_in_service")[:1]
    too_busy = (
        BookingGpu.objects.filter(held=True, start__lt=query.end, end__gt=query.start)
        .values("server_id")
        .annotate(n=Count("gpu_id", distinct=True), capacity=Subquery(capacity))
        .filter(capacity__lt=F("n") + query.gpu_count)
        .values("server_id")
    )
    listings = listings.exclude(server_id__in=too_busy)
    return listings.filter(Q(always_available=True) | Q(pk__in=_covering_listing_ids(query.start, query.end)))


class TsTzRange(Func):
    function = "TSTZRANGE"
    output_field = DateTimeRangeField()


def _covering_listing_ids(start: datetime, end: datetime):
    """Listings with an availability slot containing [start, end).

    On PostgreSQL through the GiST index on ``tstzrange(start, end)`` (migration
    0004); elsewhere a plain comparison.
    """
    if connection.vendor == "postgresql":
        slots = AvailabilitySlot.objects.annotate(span=TsTzRange("start", "end")).filter(
            span__contains=DateTimeTZRange(start, end)
        )
    else:
        slots = AvailabilitySlot.objects.filter(start__lte=start, end__gte=end)
    return slots.values("listing_id")


# What the search API returns per listing, read as plain values (no model
# instances, no serializer) in the same query as the total count.
RESULT_FIELDS = {
    "id": "id",
    "gpu_model": "gpu_model__name",
    "vram_gb": "vram_gb",
    "gpus_in_service": "gpus_in_service",
    "price_per_gpu_hour": "price_per_gpu_hour",
    "min_duration_minutes": "min_duration_minutes",
    "max_duration_minutes": "max_duration_minutes",
    "status": "status",
    "always_available": "always_available",
    "financed": "financed",
    "region": "region__code",
    "reliability": "reliability",
    "cpu_milli": "server__cpu_milli",
    "memory_mib": "server__memory_mib",
}


# A count stops here: beyond it the page says "1,000+" instead of making
# PostgreSQL visit every match of a broad search just to count them.
COUNT_CAP = 1000


@dataclass(frozen=True)
class SearchPage:
    total: int  # exact up to COUNT_CAP
    total_is_lower_bound: bool
    rows: list[dict]


def listing_search_page(query: SearchQuery, *, offset: int, limit: int) -> SearchPage:
    """One page of ``listing_search`` as plain values, in index order, and the
    number of matches counted up to ``COUNT_CAP`` (then it is a lower bound)."""
    matches = listing_search(query)
    rows = list(matches.values(*RESULT_FIELDS.values())[offset : offset + limit])
    total = len(rows) if offset == 0 and len(rows) < limit else matches.order_by()[: COUNT_CAP + 1].count()
    return SearchPage(
        total=min(total, COUNT_CAP),
        total_is_lower_bound=total > COUNT_CAP,
        rows=[{name: row[column] for name, column in RESULT_FIELDS.items()} for row in rows],
    )
