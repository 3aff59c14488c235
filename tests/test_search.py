"""Search: the API's one-statement page agrees with the queryset, filter by filter."""

from datetime import timedelta
from decimal import Decimal

import pytest

from marketplace.models import GpuModel, Region
from marketplace.selectors.search import SORTS, SearchQuery, listing_search, listing_search_page
from marketplace.services import bookings, listings
from tests.factories import make_listing, make_owner, make_renter, next_hour

pytestmark = pytest.mark.django_db


@pytest.fixture
def market():
    owner = make_owner()
    made = []
    for i, (model, count, price, region) in enumerate(
        [
            ("H100 80GB", 8, "2.49", "us-east"),
            ("H100 80GB", 8, "2.49", "eu-central"),
            ("A100 80GB", 4, "1.39", "us-east"),
            ("L40S", 2, "0.99", "ap-east"),
            ("T4", 1, "0.35", "us-west"),
            ("G2 (undisclosed)", 8, "0.50", "us-east"),
            ("RTX 4090", 1, "0.39", "eu-north"),
        ]
    ):
        listing = make_listing(owner, model=model, gpu_count=count, price=price, region=region)
        listing.reliability = Decimal("0.93") + Decimal(i) / 100
        listing.save(update_fields=["reliability"])
        made.append(listing)
    start = next_hour(2)
    renter = make_renter()
    bookings.booking_create(renter=renter, listing=made[0], gpu_count=6, start=start, end=start + timedelta(hours=3))
    bookings.booking_create(renter=renter, listing=made[2], gpu_count=4, start=start, end=start + timedelta(hours=1))
    listings.availability_window_add(listing=made[1], start=start - timedelta(hours=1), end=start + timedelta(hours=2))
    listings.listing_set_status(listing=made[6], status="paused")
    return made, start


def queries(start):
    window = {"start": start, "end": start + timedelta(hours=2)}
    h100 = GpuModel.objects.get(name="H100 80GB").pk
    us_east = Region.objects.get(code="us-east").pk
    yield SearchQuery()
    yield from (SearchQuery(sort=sort) for sort in SORTS)
    yield SearchQuery(gpu_count=4)
    yield SearchQuery(gpu_count=2, **window)
    yield SearchQuery(gpu_count=4, **window, sort="reliability")
    yield SearchQuery(gpu_count=1, start=start + timedelta(hours=3), end=start + timedelta(hours=4))
    yield SearchQuery(gpu_models=(h100,), **window)
    yield SearchQuery(min_vram_gb=48, region_id=us_east, max_price=Decimal("2.00"))
    yield SearchQuery(min_reliability=Decimal("0.97"), sort="vram")


def test_api_page_matches_the_queryset(market):
    _, start = market
    for query in queries(start):
        expected = list(listing_search(query).values_list("id", flat=True))
        page = listing_search_page(query, offset=0, limit=100)
        assert [row["id"] for row in page.rows] == expected, query
        assert page.total == len(expected) and not page.total_is_lower_bound


def test_a_window_filters_busy_servers_and_availability(market):
    made, start = market
    ids = [
        row["id"]
        for row in listing_search_page(
            SearchQuery(gpu_count=4, start=start, end=start + timedelta(hours=2)), offset=0, limit=100
        ).rows
    ]
    # made[0] has 2 of 8 GPUs free, made[2] none; made[1]'s window covers it; made[5] is free
    assert made[0].pk not in ids and made[2].pk not in ids
    assert made[1].pk in ids and made[5].pk in ids


def test_pages_and_rows(market):
    made, _ = market
    first = listing_search_page(SearchQuery(), offset=0, limit=2)
    second = listing_search_page(SearchQuery(), offset=2, limit=2)
    beyond = listing_search_page(SearchQuery(), offset=50, limit=2)
    assert first.total == second.total == beyond.total == 6
    assert [r["id"] for r in first.rows + second.rows] == list(
        listing_search(SearchQuery()).values_list("id", flat=True)
    )[:4]
    assert beyond.rows == []
    t4 = next(r for r in first.rows if r["gpu_model"] == "T4")
    assert t4 == {
        "id": made[4].pk,
        "gpu_model": "T4",
        "vram_gb": 16,
        "gpus_in_service": 1,
        "price_per_gpu_hour": Decimal("0.35"),
        "min_duration_minutes": 60,
        "max_duration_minutes": 43200,
        "status": "active",
        "always_available": True,
        "financed": False,
        "region": "us-west",
        "reliability": Decimal("0.9700"),
        "cpu_milli": 64000,
        "memory_mib": 262144,
    }
