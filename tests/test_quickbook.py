"""Quick book with a choice: the best placement, the cheapest and the most reliable, priced as the
booking will be; only models with supply offered; a price change or a server taken meanwhile refused
with nothing booked; the page and the API."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from core.errors import ConflictError
from marketplace.models import Booking, GpuModel, Listing
from marketplace.services import bookings, listings
from scheduler import selectors
from scheduler.services import clusters, quickbook
from tests.api_errors import field_errors
from tests.factories import make_listing, make_renter

H100 = "H100 80GB"


def _listing(owner, hostname, *, gpus, price, reliability, model=H100, region="us-east"):
    listing = make_listing(owner, gpu_count=gpus, price=price, hostname=hostname, model=model, region=region)
    Listing.objects.filter(pk=listing.pk).update(reliability=Decimal(reliability))
    listing.refresh_from_db()
    return listing


@pytest.fixture
def market(owner):
    """Four H100 servers on one simulated cluster, for a request of 4 GPUs: one fits exactly,
    one is cheap but unreliable, one reliable but dear, one in between on both."""
    fit = _listing(owner, "fit", gpus=4, price="2.50", reliability="0.9500")
    cheap = _listing(owner, "cheap", gpus=8, price="1.50", reliability="0.8000")
    steady = _listing(owner, "steady", gpus=8, price="3.00", reliability="0.9990")
    midrange = _listing(owner, "midrange", gpus=8, price="2.80", reliability="0.9000")
    company = owner.owner_membership.company
    clusters.cluster_create_simulated(
        owner=company, name="sim", servers=[fit.server, cheap.server, steady.server, midrange.server]
    )
    return {"fit": fit, "cheap": cheap, "steady": steady, "midrange": midrange}


def _h100():
    return GpuModel.objects.get(name=H100)


def _options(**kwargs):
    terms = {"gpu_count": 4, "gpu_models": [_h100()], "hours": 2} | kwargs
    return quickbook.quick_book_options(**terms)


def test_three_options_best_then_cheapest_then_most_reliable(market):
    options = _options()
    assert [(o.label, o.hostname) for o in options] == [
        ("Best placement", "fit"),
        ("Cheapest", "cheap"),
        ("Most reliable", "steady"),
    ]
    best, cheapest, reliable = options
    assert best.listing_id == market["fit"].pk and best.gpu_model == H100 and best.gpu_count == 4
    assert (best.price_per_gpu_hour, best.total) == (Decimal("2.50"), Decimal("20.00"))  # 4 × 2 h × $2.50
    assert (cheapest.total, reliable.total) == (Decimal("12.00"), Decimal("24.00"))
    assert reliable.reliability == Decimal("0.9990") and best.region == "us-east"
    assert best.end - best.start == timedelta(hours=2) and best.start.second == 0
    assert len({o.server_id for o in options}) == 3


def test_options_are_priced_exactly_as_the_booking(market, renter):
    """An odd-minute price: the option's total is the booking's amount to the cent."""
    listings.listing_update(
        listing=market["fit"], price_per_gpu_hour=Decimal("2.37"), min_duration_minutes=60, max_duration_minutes=600
    )
    best = _options(hours=3)[0]
    booking = quickbook.quick_book_select(
        renter=renter, listing_id=best.listing_id, gpu_count=4, hours=3, start=best.start, quoted_total=best.total
    )
    assert booking.amount == best.total == Decimal("28.44")  # 4 × 3 × 2.37


def test_fewer_candidates_give_fewer_options_and_none_gives_none(owner):
    only = _listing(owner, "only", gpus=4, price="2.00", reliability="0.9900")
    clusters.cluster_create_simulated(owner=owner.owner_membership.company, name="sim", servers=[only.server])
    assert [o.label for o in _options()] == ["Best placement"]
    assert _options(gpu_count=5) == []


def test_booking_an_option_holds_it(market, renter):
    cheapest = _options()[1]
    booking = quickbook.quick_book_select(
        renter=renter,
        listing_id=cheapest.listing_id,
        gpu_count=4,
        hours=2,
        start=cheapest.start,
        quoted_total=cheapest.total,
    )
    assert booking.listing_id == market["cheap"].pk and booking.status == Booking.Status.PENDING_PAYMENT
    assert (booking.gpu_count, booking.amount, booking.start) == (4, Decimal("12.00"), cheapest.start)


def test_an_option_taken_meanwhile_is_a_conflict_and_the_rest_stay_offered(market, renter):
    best = _options()[0]
    other = make_renter()
    bookings.booking_create(renter=other, listing=market["fit"], gpu_count=1, start=best.start, end=best.end)
    with pytest.raises(ConflictError) as exc:
        quickbook.quick_book_select(
            renter=renter, listing_id=best.listing_id, gpu_count=4, hours=2, start=best.start, quoted_total=best.total
        )
    assert "fit was just taken by someone else" in exc.value.message_dict["listing"][0]
    assert not Booking.objects.filter(renter=renter).exists()
    assert "fit" not in {o.hostname for o in _options()}  # 3 GPUs left there: not an option any more


def test_a_price_changed_since_shown_is_refused_and_nothing_is_booked(market, renter):
    best = _options()[0]
    listings.listing_update(
        listing=market["fit"], price_per_gpu_hour=Decimal("2.75"), min_duration_minutes=60, max_duration_minutes=600
    )
    with pytest.raises(ValidationError) as exc:
        quickbook.quick_book_select(
            renter=renter, listing_id=best.listing_id, gpu_count=4, hours=2, start=best.start, quoted_total=best.total
        )
    message = exc.value.message_dict["quoted_total"][0]
    assert "price of fit changed" in message and "$20.00 then, $22.00 now" in message
    assert not Booking.objects.filter(renter=renter).exists()


def test_an_option_whose_start_has_passed_moves_to_now_at_the_same_total(market, renter):
    best = _options()[0]
    later = best.start + timedelta(minutes=10)
    booking = quickbook.quick_book_select(
        renter=renter,
        listing_id=best.listing_id,
        gpu_count=4,
        hours=2,
        start=best.start,
        quoted_total=best.total,
        now=later,
    )
    assert booking.start == later.replace(second=0, microsecond=0) + timedelta(minutes=1)
    assert booking.end - booking.start == timedelta(hours=2) and booking.amount == best.total


def test_a_server_without_a_ready_node_cannot_be_selected(owner, renter):
    offline = _listing(owner, "offline", gpus=4, price="2.00", reliability="0.9900")  # no cluster node
    with pytest.raises(ValidationError) as exc:
        quickbook.quick_book_select(
            renter=renter, listing_id=offline.pk, gpu_count=1, hours=1, quoted_total=Decimal("2.00")
        )
    assert "cannot take work right now" in exc.value.message_dict["listing"][0]
    with pytest.raises(ValidationError) as exc:
        quickbook.quick_book_select(renter=renter, listing_id=10**12, gpu_count=1, hours=1, quoted_total=Decimal(2))
    assert "no longer offered" in exc.value.message_dict["listing"][0]


def test_models_with_supply_counts_free_gpus_on_ready_nodes(owner, renter):
    ready = _listing(owner, "ready", gpus=4, price="2.00", reliability="0.9900")
    busy = _listing(owner, "busy", gpus=2, price="2.00", reliability="0.9900", model="A100 80GB")
    _listing(owner, "offline", gpus=8, price="2.00", reliability="0.9900", model="V100 32GB")  # no node
    clusters.cluster_create_simulated(
        owner=owner.owner_membership.company, name="sim", servers=[ready.server, busy.server]
    )
    best = quickbook.quick_book_options(gpu_count=2, gpu_models=[busy.gpu_model], hours=2)[0]
    quickbook.quick_book_select(
        renter=renter, listing_id=best.listing_id, gpu_count=2, hours=2, start=best.start, quoted_total=best.total
    )
    supply = {m.name: m.free_gpus for m in selectors.models_with_supply(now=best.start)}
    assert supply == {H100: 4}  # A100 all held, V100 on no node


def test_the_form_offers_only_models_with_supply(market, owner, renter, client_as):
    _listing(owner, "lonely", gpus=2, price="2.00", reliability="0.99", model="A100 80GB")  # on no cluster node
    page = client_as(renter).get("/quick-book/")
    html = page.content.decode()
    assert page.status_code == 200
    assert "H100 80GB (28 GPUs free now)" in html
    assert "A100 80GB" not in html


def test_page_finds_placements_and_books_one(market, renter, client_as):
    client = client_as(renter)
    h100 = _h100()
    found = client.post("/quick-book/", {"gpu_model": h100.pk, "gpu_count": 4, "hours": 2, "find": ""})
    html = found.content.decode()
    assert found.status_code == 200
    assert html.index("Best placement") < html.index("Cheapest") < html.index("Most reliable")
    assert "$20.00" in html and "$12.00" in html and "$24.00" in html and "midrange" not in html
    cheapest = found.context["options"][1]
    booked = client.post(
        "/quick-book/",
        {
            "gpu_model": h100.pk,
            "gpu_count": 4,
            "hours": 2,
            "listing": cheapest.listing_id,
            "start": cheapest.start.isoformat(),
            "quoted_total": str(cheapest.total),
            "book": "",
        },
    )
    booking = Booking.objects.get(renter=renter)
    assert booked.status_code == 302 and booked["Location"] == f"/bookings/{booking.public_id}/checkout/"
    assert booking.listing_id == market["cheap"].pk


def test_page_shows_a_lost_race_above_the_remaining_options(market, renter, client_as):
    best = _options()[0]
    bookings.booking_create(renter=make_renter(), listing=market["fit"], gpu_count=2, start=best.start, end=best.end)
    page = client_as(renter).post(
        "/quick-book/",
        {
            "gpu_model": _h100().pk,
            "gpu_count": 4,
            "hours": 2,
            "listing": best.listing_id,
            "start": best.start.isoformat(),
            "quoted_total": str(best.total),
            "book": "",
        },
    )
    assert page.status_code == 400
    assert "fit was just taken by someone else" in page.content.decode()
    assert [o.hostname for o in page.context["options"]] == ["cheap", "midrange", "steady"]
    assert not Booking.objects.filter(renter=renter).exists()


def test_page_with_no_placement_says_so(market, renter, client_as):
    page = client_as(renter).post("/quick-book/", {"gpu_model": _h100().pk, "gpu_count": 9, "hours": 2, "find": ""})
    assert page.status_code == 400 and "No server can run 9 GPU(s)" in page.content.decode()


def test_api_options_and_booking_one(market, renter, api_as):
    api = api_as(renter)
    response = api.post("/api/v1/quick-book/options/", {"gpu_model": H100, "gpu_count": 4, "hours": 2}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert [(o["label"], o["hostname"], o["total"]) for o in body] == [
        ("Best placement", "fit", "20.00"),
        ("Cheapest", "cheap", "12.00"),
        ("Most reliable", "steady", "24.00"),
    ]
    assert Booking.objects.count() == 0
    steady = body[2]
    booked = api.post(
        "/api/v1/quick-book/",
        {"gpu_model": H100, "gpu_count": 4, "hours": 2, "listing": steady["listing"], "quoted_total": "24.00"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="pick-steady",
    )
    assert booked.status_code == 201, booked.json()
    assert booked.json()["listing"] == market["steady"].pk == Booking.objects.get(renter=renter).listing_id


def test_api_price_change_is_400_and_taken_is_409(market, renter, api_as):
    api = api_as(renter)
    fit = market["fit"]
    changed = api.post(
        "/api/v1/quick-book/",
        {"gpu_model": H100, "gpu_count": 4, "hours": 2, "listing": fit.pk, "quoted_total": "19.00"},
        format="json",
    )
    assert changed.status_code == 400
    assert "changed since it was shown" in field_errors(changed)["quoted_total"][0]
    start = _options()[0].start
    bookings.booking_create(renter=make_renter(), listing=fit, gpu_count=4, start=start, end=start + timedelta(hours=2))
    taken = api.post(
        "/api/v1/quick-book/",
        {"gpu_model": H100, "gpu_count": 4, "hours": 2, "listing": fit.pk, "quoted_total": "20.00"},
        format="json",
    )
    assert taken.status_code == 409 and "just taken" in field_errors(taken)["listing"][0]
    assert not Booking.objects.filter(renter=renter).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"gpu_model": "No Such GPU", "gpu_count": 1, "hours": 1}, "gpu_model"),
        ({"gpu_model": H100, "gpu_count": 0, "hours": 1}, "gpu_count"),
        ({"gpu_model": H100, "gpu_count": 1, "hours": 721}, "hours"),
        ({"gpu_model": H100, "gpu_count": 1, "hours": 1, "cpu_milli": -1}, "cpu_milli"),
        ({"gpu_model": H100, "gpu_count": 1, "hours": 1, "price_cap": "abc"}, "price_cap"),
    ],
)
def test_api_options_bad_input_is_400_with_field_messages(market, renter, api_as, body, field):
    response = api_as(renter).post("/api/v1/quick-book/options/", body, format="json")
    assert response.status_code == 400 and field in field_errors(response)


def test_api_listing_without_quoted_total_is_400(market, renter, api_as):
    response = api_as(renter).post(
        "/api/v1/quick-book/",
        {"gpu_model": H100, "gpu_count": 1, "hours": 1, "listing": market["fit"].pk},
        format="json",
    )
    assert response.status_code == 400 and "quoted_total" in field_errors(response)


def test_the_cpu_and_memory_asked_for_are_booked(market, renter, client_as):
    """64 cores and 256 GiB per server, split evenly: 4 of 8 GPUs take 32 cores and 128 GiB; the renter
    asks for 40 cores and 200 GiB."""
    steady = _options(cpu_milli=40_000)[2]
    page = client_as(renter).post(
        "/quick-book/",
        {
            "gpu_model": _h100().pk,
            "gpu_count": 4,
            "hours": 2,
            "cpu_cores": 40,
            "memory_gib": 200,
            "listing": steady.listing_id,
            "start": steady.start.isoformat(),
            "quoted_total": str(steady.total),
            "book": "",
        },
    )
    assert page.status_code == 302
    booking = Booking.objects.get(renter=renter)
    assert (booking.listing_id, booking.cpu_milli, booking.memory_mib) == (market["steady"].pk, 40_000, 204_800)


def test_an_option_whose_cpu_was_taken_meanwhile_says_so(market, renter):
    steady = _options()[2]
    bookings.booking_create(
        renter=make_renter(),
        listing=market["steady"],
        gpu_count=2,
        start=steady.start,
        end=steady.end,
        cpu_milli=40_000,
    )
    with pytest.raises(ConflictError) as exc:
        quickbook.quick_book_select(
            renter=renter,
            listing_id=steady.listing_id,
            gpu_count=4,
            hours=2,
            start=steady.start,
            quoted_total=steady.total,
        )
    message = exc.value.message_dict["listing"][0]
    assert message.startswith("steady was just taken by someone else (Only 24 of 64 CPU cores are free")
    assert not Booking.objects.filter(renter=renter).exists()
