"""The market through the REST API: search, listings, bookings, payment, invoices, usage."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from marketplace.models import Booking, BookingGpu, GpuModel, Settlement
from marketplace.services import bookings, listings
from tests.api_errors import field_errors
from tests.factories import make_listing, make_renter, next_hour

pytestmark = pytest.mark.django_db

FMT = "%Y-%m-%dT%H:%M"


@pytest.fixture
def market(owner):
    cheap = make_listing(owner, price="1.10", gpu_count=2, model="A100 80GB", region="us-east")
    pricey = make_listing(owner, price="4.00", gpu_count=8, model="H100 80GB", region="eu-central")
    small = make_listing(owner, price="0.40", gpu_count=1, model="T4", region="us-east")
    return cheap, pricey, small


def ids(response):
    return [row["id"] for row in response.json()["results"]]


def test_search_filters_and_sorts(market, client):
    cheap, pricey, small = market
    url = reverse("api:search")
    assert ids(client.get(url)) == [small.pk, cheap.pk, pricey.pk]
    assert ids(client.get(url, {"sort": "-price"})) == [pricey.pk, cheap.pk, small.pk]
    assert ids(client.get(url, {"gpu_count": 2})) == [cheap.pk, pricey.pk]
    assert ids(client.get(url, {"min_vram_gb": 80, "max_price": "2.00"})) == [cheap.pk]
    assert ids(client.get(url, {"region": "eu-central"})) == [pricey.pk]
    h100 = GpuModel.objects.get(name="H100 80GB")
    assert ids(client.get(url, {"gpu_model": h100.pk})) == [pricey.pk]
    bad = client.get(url, {"gpu_count": 0, "region": "mars"})
    assert bad.status_code == 400 and set(field_errors(bad)) == {"gpu_count", "region"}


def test_search_window_excludes_busy_paused_and_unavailable(market, renter, client):
    cheap, pricey, small = market
    start = next_hour(3)
    end = start + timedelta(hours=2)
    bookings.booking_create(renter=renter, listing=cheap, gpu_count=1, start=start, end=end)
    listings.listing_set_status(listing=small, status="paused")
    params = {"start": start.strftime(FMT), "end": end.strftime(FMT)}
    url = reverse("api:search")
    assert ids(client.get(url, params)) == [cheap.pk, pricey.pk]  # one of cheap's two GPUs is still free
    assert ids(client.get(url, {**params, "gpu_count": 2})) == [pricey.pk]
    later = {"start": (end + timedelta(hours=1)).strftime(FMT), "end": (end + timedelta(hours=2)).strftime(FMT)}
    assert ids(client.get(url, {**later, "gpu_count": 2})) == [cheap.pk, pricey.pk]
    listings.availability_window_add(listing=pricey, start=end + timedelta(days=1), end=end + timedelta(days=2))
    assert ids(client.get(url, params)) == [cheap.pk]
    assert client.get(url, {"start": params["start"]}).status_code == 400


def test_listing_calendar_counts_free_gpus_per_hour(market, renter, client):
    cheap, _, _ = market
    start = next_hour(1)
    bookings.booking_create(renter=renter, listing=cheap, gpu_count=1, start=start, end=start + timedelta(hours=1))
    days = client.get(reverse("api:listing-calendar", args=[cheap.pk])).json()
    assert len(days) == 14 and all(len(d["free_gpus_per_hour"]) == 24 for d in days)
    cells = [c for d in days for c in d["free_gpus_per_hour"] if c is not None]
    assert cells.count(1) == 1 and set(cells) == {1, 2}


def test_book_pay_and_get_the_invoice(market, renter, api_as):
    cheap, _, _ = market
    client = api_as(renter)
    start = next_hour(2)
    body = {
        "listing": cheap.pk,
        "gpu_count": 2,
        "start": start.isoformat(),
        "end": (start + timedelta(hours=3)).isoformat(),
    }
    quote = client.post(reverse("api:booking-quote"), body, format="json")
    assert quote.status_code == 200 and quote.json()["amount"] == "6.60"
    created = client.post(reverse("api:booking-list"), {**body, "quoted_price": "1.10"}, format="json")
    assert created.status_code == 201
    booking = created.json()
    assert booking["status"] == "pending_payment" and booking["amount"] == "6.600000" and len(booking["gpus"]) == 2
    paid = client.post(reverse("api:booking-pay", args=[booking["id"]]), {}, format="json")
    assert paid.status_code == 200 and paid.json()["status"] == "confirmed" and paid.json()["escrow"] == "6.600000"
    invoice = client.get(reverse("api:booking-invoice", args=[booking["id"]])).json()
    assert invoice["paid"] == "6.60" and invoice["net"] == "6.60" and invoice["test_payment"] is True
    assert [b["id"] for b in client.get(reverse("api:booking-list")).json()["results"]] == [booking["id"]]


def test_bad_booking_requests_get_field_messages_and_hold_nothing(market, renter, api_as):
    cheap, _, _ = market
    client = api_as(renter)
    start = next_hour(2)
    past = client.post(
        reverse("api:booking-list"),
        {
            "listing": cheap.pk,
            "gpu_count": 5,
            "start": (start - timedelta(hours=5)).isoformat(),
            "end": (start - timedelta(hours=6)).isoformat(),
        },
        format="json",
    )
    assert past.status_code == 400
    assert set(field_errors(past)) == {"start", "end", "gpu_count"}
    missing = client.post(
        reverse("api:booking-list"),
        {
            "listing": 999999,
            "gpu_count": 1,
            "start": start.isoformat(),
            "end": (start + timedelta(hours=1)).isoformat(),
        },
        format="json",
    )
    assert missing.status_code == 400 and "listing" in field_errors(missing)
    assert Booking.objects.count() == 0 and BookingGpu.objects.count() == 0


def test_conflict_is_409(market, renter, api_as):
    cheap, _, _ = market
    start = next_hour(2)
    body = {
        "listing": cheap.pk,
        "gpu_count": 2,
        "start": start.isoformat(),
        "end": (start + timedelta(hours=1)).isoformat(),
    }
    assert api_as(renter).post(reverse("api:booking-list"), body, format="json").status_code == 201
    taken = api_as(make_renter()).post(reverse("api:booking-list"), body, format="json")
    assert taken.status_code == 409 and "free for that window" in field_errors(taken)["gpu_count"][0]


def test_someone_elses_booking_is_404_and_owners_cannot_book(market, renter, owner, api_as):
    cheap, _, _ = market
    start = next_hour(2)
    booking = bookings.booking_create(
        renter=renter, listing=cheap, gpu_count=1, start=start, end=start + timedelta(hours=1)
    )
    other = api_as(make_renter())
    assert other.get(reverse("api:booking-detail", args=[booking.public_id])).status_code == 404
    assert other.post(reverse("api:booking-pay", args=[booking.public_id])).status_code == 404
    assert api_as(owner).get(reverse("api:booking-list")).status_code == 403
    booking.refresh_from_db()
    assert booking.status == Booking.Status.PENDING_PAYMENT


def test_usage_endpoint_is_for_operators_and_idempotent(market, renter, operator, api_as):
    cheap, _, _ = market
    start = next_hour(2)
    booking = bookings.booking_pay(
        booking=bookings.booking_create(
            renter=renter, listing=cheap, gpu_count=2, start=start, end=start + timedelta(hours=1)
        ),
        renter=renter,
    )
    body = {
        "key": "job-9:0",
        "interval_start": start.isoformat(),
        "interval_end": (start + timedelta(minutes=30)).isoformat(),
        "gpu_seconds": 3600,
    }
    url = reverse("api:booking-usage", args=[booking.public_id])
    assert api_as(renter).post(url, body, format="json").status_code == 403
    first = api_as(operator).post(url, body, format="json")
    assert first.status_code == 201 and first.json()["gross_amount"] == "1.100000"
    assert api_as(operator).post(url, body, format="json").status_code == 200
    assert Settlement.objects.count() == 1


def test_owner_lists_pauses_and_restricts_availability(owner, api_as):
    from tests.factories import make_server

    server = make_server(owner, gpu_count=4, model="L40S")
    client = api_as(owner)
    created = client.post(
        reverse("api:owner-listing-list"), {"server": server.pk, "price_per_gpu_hour": "0.95"}, format="json"
    )
    assert (
        created.status_code == 201 and created.json()["gpu_model"] == "L40S" and created.json()["gpus_in_service"] == 4
    )
    pk = created.json()["id"]
    again = client.post(
        reverse("api:owner-listing-list"), {"server": server.pk, "price_per_gpu_hour": "0.95"}, format="json"
    )
    assert again.status_code == 400 and "already listed" in field_errors(again)["server"][0]
    bad = client.put(
        reverse("api:owner-listing-detail", args=[pk]),
        {"price_per_gpu_hour": "0.001", "min_duration_minutes": 30},
        format="json",
    )
    assert bad.status_code == 400
    paused = client.post(reverse("api:owner-listing-set-status", args=[pk]), {"status": "paused"}, format="json")
    assert paused.json()["status"] == "paused"
    rules = client.post(
        reverse("api:owner-listing-availability", args=[pk]),
        {"kind": "weekly", "weekday": 2, "start_minute": 480, "end_minute": 1200},
        format="json",
    )
    assert rules.status_code == 200 and rules.json()[0]["weekday"] == 2
    assert client.get(reverse("api:owner-listing-detail", args=[pk])).json()["always_available"] is False
    bad_rule = client.post(
        reverse("api:owner-listing-availability", args=[pk]),
        {"kind": "weekly", "weekday": 9, "start_minute": 600, "end_minute": 500},
        format="json",
    )
    assert bad_rule.status_code == 400 and set(field_errors(bad_rule)) == {"weekday", "end_minute"}


def test_earnings_show_delivered_revenue_and_escrow(owner, renter, client_as):
    listing = make_listing(owner, price="2.00", gpu_count=2)
    start = next_hour(-3)
    # a booking that ran three hours ago (created as if then), delivered half
    booking = bookings.booking_create(
        renter=renter, listing=listing, gpu_count=2, start=start, end=start + timedelta(hours=2), now=start
    )
    # its hold (created "then") has lapsed for the pay service, so record the payment as a webhook would
    from marketplace.models import Payment

    Payment.objects.create(
        booking=booking,
        gateway="offline",
        is_test=True,
        idempotency_key="t",
        reference="offpi_t",
        amount=booking.amount,
    )
    bookings.payment_succeeded(gateway="offline", reference="offpi_t", amount=booking.amount)
    bookings.booking_record_usage(
        booking=booking, key="k", interval_start=start, interval_end=start + timedelta(hours=1), gpu_seconds=7200
    )
    live = bookings.booking_pay(
        booking=bookings.booking_create(
            renter=renter, listing=listing, gpu_count=1, start=next_hour(5), end=next_hour(6)
        ),
        renter=renter,
    )
    # a booking cancelled before its start released its GPUs: not booked time
    dropped = bookings.booking_create(
        renter=renter,
        listing=listing,
        gpu_count=2,
        start=start + timedelta(hours=2),
        end=start + timedelta(hours=3),
        now=start,
    )
    bookings.booking_cancel(booking=dropped, renter=renter, now=start)
    response = client_as(owner).get(reverse("marketplace:owner_earnings_csv"), {"days": 7})
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 1
    assert Decimal(rows[0]["earned_usd"]) == Decimal("4.000000")
    assert Decimal(rows[0]["escrow_usd"]) == Decimal("4.000000") + live.amount  # half of the first + all of the second
    assert Decimal(rows[0]["booked_gpu_hours"]) == Decimal("4.00")
