"""GPU search: which listings can give N GPUs on one server, at what price.

Built to stay fast at 10k servers / 60k GPUs. Every filter is a column of
``Listing`` (its GPU model, VRAM, region, in-service GPU count and
reliability are denormalised onto it), served by indexes. A window
[start, end) adds two questions that touch only the rows that matter:
which servers are left with fewer than N free GPUs by the holds in the
window (usually a handful, GROUP BY … HAVING), and which listings with
rules have a merged availability slot containing the window (a GiST index
on ``tstzrange(start, end)`` on PostgreSQL).

Two implementations of the same question:

- ``listing_search`` builds a Django queryset (pages, SQLite, anything that
  wants model instances);
- ``listing_search_page`` answers the API with one page of plain values and
  the number of matches (counted up to ``COUNT_CAP``). On PostgreSQL it is a
  single parameterised statement, because building and compiling the ORM
  queries cost more than running them; elsewhere it uses the queryset.

``tests/test_search.py`` checks that both give the same listings in the same
order on the database the suite runs on.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.contrib.postgres.fields import DateTimeRangeField
from django.db import connection
from django.db.backends.postgresql.psycopg_any import DateTimeTZRange
from django.db.models import Count, F, Func, OuterRef, Q, QuerySet, Subquery

from marketplace.models import AvailabilitySlot, BookingGpu, Listing

# Sort orders: the same on both paths (NULL VRAM, undisclosed models, last).
SORTS = {
    "price": (F("price_per_gpu_hour").asc(), F("reliability").desc(), F("id").asc()),
    "-price": (F("price_per_gpu_hour").desc(), F("reliability").desc(), F("id").asc()),
    "reliability": (F("reliability").desc(), F("price_per_gpu_hour").asc(), F("id").asc()),
    "vram": (F("vram_gb").desc(nulls_last=True), F("price_per_gpu_hour").asc(), F("id").asc()),
}
SQL_SORTS = {
    "price": "l.price_per_gpu_hour ASC, l.reliability DESC, l.id ASC",
    "-price": "l.price_per_gpu_hour DESC, l.reliability DESC, l.id ASC",
    "reliability": "l.reliability DESC, l.price_per_gpu_hour ASC, l.id ASC",
    "vram": "l.vram_gb DESC NULLS LAST, l.price_per_gpu_hour ASC, l.id ASC",
}

# A count stops here: beyond it the API says "1,000 or more" rather than make
# the database visit every match of a broad search just to count them.
COUNT_CAP = 1000


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
    """Listings with an availability slot containing [start, end)."""
    if connection.vendor == "postgresql":
        slots = AvailabilitySlot.objects.annotate(span=TsTzRange("start", "end")).filter(
            span__contains=DateTimeTZRange(start, end)
        )
    else:
        slots = AvailabilitySlot.objects.filter(start__lte=start, end__gte=end)
    return slots.values("listing_id")


# --- One page for the API ------------------------------------------------------------

# What the API returns per listing, and the column each value comes from.
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
SQL_COLUMNS = {
    "id": "l.id",
    "gpu_model": "m.name",
    "vram_gb": "l.vram_gb",
    "gpus_in_service": "l.gpus_in_service",
    "price_per_gpu_hour": "l.price_per_gpu_hour",
    "min_duration_minutes": "l.min_duration_minutes",
    "max_duration_minutes": "l.max_duration_minutes",
    "status": "l.status",
    "always_available": "l.always_available",
    "financed": "l.financed",
    "region": "r.code",
    "reliability": "l.reliability",
    "cpu_milli": "s.cpu_milli",
    "memory_mib": "s.memory_mib",
}


@dataclass(frozen=True)
class SearchPage:
    total: int  # exact up to COUNT_CAP
    total_is_lower_bound: bool
    rows: list[dict]


def listing_search_page(query: SearchQuery, *, offset: int, limit: int) -> SearchPage:
    """One page of matches as plain values, and their number up to ``COUNT_CAP``."""
    if connection.vendor == "postgresql":
        rows, total = _page_postgres(query, offset=offset, limit=limit)
    else:
        matches = listing_search(query)
        values = list(matches.values(*RESULT_FIELDS.values())[offset : offset + limit])
        rows = [{name: row[column] for name, column in RESULT_FIELDS.items()} for row in values]
        total = len(rows) if offset == 0 and len(rows) < limit else matches.order_by()[: COUNT_CAP + 1].count()
    return SearchPage(total=min(total, COUNT_CAP), total_is_lower_bound=total > COUNT_CAP, rows=rows)


def _page_postgres(query: SearchQuery, *, offset: int, limit: int) -> tuple[list[dict], int]:
    where = ["l.status = 'active'", "l.gpus_in_service >= %(n)s"]
    params: dict = {"n": max(query.gpu_count, 1), "cap": COUNT_CAP + 1, "limit": limit, "offset": offset}
    if query.gpu_models:
        where.append("l.gpu_model_id = ANY(%(models)s)")
        params["models"] = list(query.gpu_models)
    if query.min_vram_gb:
        where.append("l.vram_gb >= %(vram)s")
        params["vram"] = query.min_vram_gb
    if query.region_id:
        where.append("l.region_id = %(region)s")
        params["region"] = query.region_id
    if query.max_price is not None:
        where.append("l.price_per_gpu_hour <= %(max_price)s")
        params["max_price"] = query.max_price
    if query.min_reliability is not None:
        where.append("l.reliability >= %(min_reliability)s")
        params["min_reliability"] = query.min_reliability
    ctes = ""
    if query.start and query.end:
        params.update(start=query.start, end=query.end)
        # Computed once per statement (each is referenced once, inside the
        # matches CTE, which the count and the page both inline).
        ctes = """
        too_busy AS MATERIALIZED (
            SELECT b.server_id FROM marketplace_bookinggpu b
            WHERE b.held AND b.start < %(end)s AND b."end" > %(start)s
            GROUP BY b.server_id
            HAVING (SELECT c.gpus_in_service FROM marketplace_listing c WHERE c.server_id = b.server_id)
                   < count(DISTINCT b.gpu_id) + %(n)s
        ),
        covering AS MATERIALIZED (
            SELECT a.listing_id FROM marketplace_availabilityslot a
            WHERE tstzrange(a.start, a."end") @> tstzrange(%(start)s, %(end)s)
        ),"""
        where.append("l.server_id NOT IN (SELECT server_id FROM too_busy)")
        where.append("(l.always_available OR l.id IN (SELECT listing_id FROM covering))")
    columns = ", ".join(f"{column} AS {name}" for name, column in SQL_COLUMNS.items())
    sql = f"""
        WITH {ctes}
        matches AS NOT MATERIALIZED (
            SELECT l.* FROM marketplace_listing l WHERE {" AND ".join(where)}
        )
        SELECT (SELECT count(*) FROM (SELECT 1 FROM matches LIMIT %(cap)s) counted) AS total, {columns}
        FROM (SELECT * FROM matches l ORDER BY {SQL_SORTS.get(query.sort, SQL_SORTS["price"])}
              LIMIT %(limit)s OFFSET %(offset)s) l
        JOIN marketplace_gpumodel m ON m.id = l.gpu_model_id
        JOIN marketplace_region r ON r.id = l.region_id
        JOIN marketplace_server s ON s.id = l.server_id
        ORDER BY {SQL_SORTS.get(query.sort, SQL_SORTS["price"])}
    """  # noqa: S608 - every fragment is a constant of this module; values are parameters
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        names = [c.name for c in cursor.description]
        fetched = cursor.fetchall()
        if not fetched:
            cursor.execute(
                f"WITH {ctes} matches AS NOT MATERIALIZED (SELECT l.* FROM marketplace_listing l "  # noqa: S608
                f"WHERE {' AND '.join(where)}) SELECT count(*) FROM (SELECT 1 FROM matches LIMIT %(cap)s) counted",
                params,
            )
            return [], cursor.fetchone()[0]
    total = fetched[0][0]
    rows = [dict(zip(names[1:], row[1:], strict=True)) for row in fetched]
    return rows, total
