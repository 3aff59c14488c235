"""The market pages: search, listing, checkout, my bookings, invoices, owner listings and earnings."""

import csv
import io
from datetime import timedelta

import pytest
from django.urls import reverse

from marketplace.models import Booking, Listing
from marketplace.services import bookings
from tests.factories import make_listing, make_server, next_hour

pytestmark = pytest.mark.django_db

FMT = "%Y-%m-%dT%H:%M"


def test_search_page_lists_and_filters(owner, client):
    a = make_listing(owner, price="1.50", gpu_count=4, model="A100 80GB")
    make_listing(owner, price="0.30", gpu_count=1, model="T4")
    page = client.get(reverse("marketplace:search"), {"gpu_count": 2})
    assert page.status_code == 200 and [row.pk for row in page.context["page"].object_list] == [a.pk]
    bad = client.get(reverse("marketplace:search"), {"start": next_hour(2).strftime(FMT)})
    assert bad.status_code == 400 and "Give both ends" in bad.content.decode()


def test_renter_books_pays_and_sees_the_booking_and_invoice(owner, renter, client_as):
    listing = make_listing(owner, price="2.25", gpu_count=2)
    client = client_as(renter)
    detail = client.get(reverse("marketplace:listing_detail", args=[listing.pk]))
    assert detail.status_code == 200 and len(detail.context["calendar"]) == 14
    start = next_hour(3)
    response = client.post(
        reverse("marketplace:booking_create", args=[listing.pk]),
        {
            "gpu_count": 2,
            "start": start.strftime(FMT),
            "end": (start + timedelta(hours=2)).strftime(FMT),
            "quoted_price": "2.25",
        },
    )
    booking = Booking.objects.get()
    assert response.status_code == 302 and response.url == reverse("marketplace:checkout", args=[booking.public_id])
    checkout = client.get(response.url)
    assert "Test payment" in checkout.content.decode() and "$9.00" in checkout.content.decode()
    assert client.post(response.url).status_code == 302
    booking.refresh_from_db()
    assert booking.status == Booking.Status.CONFIRMED
    mine = client.get(reverse("marketplace:my_bookings")).content.decode()
    assert "Confirmed" in mine and 'role="progressbar"' in mine
    invoice = client.get(reverse("marketplace:invoice", args=[booking.public_id])).content.decode()
    assert "2 × H100 80GB × 2 h × $2.25/GPU-h" in invoice and "9.00" in invoice
    rows = list(csv.DictReader(io.StringIO(client.get(reverse("marketplace:invoices_csv")).content.decode())))
    assert [(r["gpus"], r["paid"], r["test_payment"]) for r in rows] == [("2", "9.00", "yes")]


def test_booking_form_errors_show_on_the_page_and_hold_nothing(owner, renter, client_as):
    listing = make_listing(owner, price="2.25", gpu_count=2)
    start = next_hour(3)
    response = client_as(renter).post(
        reverse("marketplace:booking_create", args=[listing.pk]),
        {"gpu_count": 3, "start": start.strftime(FMT), "end": start.strftime(FMT), "quoted_price": "2.00"},
    )
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert "after the start" in errors["end"][0] and "2 GPU(s) in service" in errors["gpu_count"][0]
    assert Booking.objects.count() == 0


def test_price_change_and_conflict_on_the_page(owner, renter, client_as):
    from tests.factories import make_renter

    listing = make_listing(owner, price="2.25", gpu_count=1)
    start = next_hour(3)
    data = {"gpu_count": 1, "start": start.strftime(FMT), "end": (start + timedelta(hours=1)).strftime(FMT)}
    stale = client_as(renter).post(
        reverse("marketplace:booking_create", args=[listing.pk]), {**data, "quoted_price": "1.99"}
    )
    assert stale.status_code == 400 and "price changed" in stale.content.decode()
    assert (
        client_as(renter)
        .post(reverse("marketplace:booking_create", args=[listing.pk]), {**data, "quoted_price": "2.25"})
        .status_code
        == 302
    )
    lost = client_as(make_renter()).post(
        reverse("marketplace:booking_create", args=[listing.pk]), {**data, "quoted_price": "2.25"}
    )
    assert lost.status_code == 409 and "free for that window" in lost.content.decode()
    assert Booking.objects.count() == 1


def test_someone_elses_checkout_and_invoice_are_404(owner, renter, client_as):
    from tests.factories import make_renter

    listing = make_listing(owner, gpu_count=1)
    start = next_hour(2)
    booking = bookings.booking_create(
        renter=renter, listing=listing, gpu_count=1, start=start, end=start + timedelta(hours=1)
    )
    other = client_as(make_renter())
    assert other.get(reverse("marketplace:checkout", args=[booking.public_id])).status_code == 404
    assert other.post(reverse("marketplace:booking_cancel", args=[booking.public_id])).status_code == 404
    booking.refresh_from_db()
    assert booking.status == Booking.Status.PENDING_PAYMENT


def test_owner_creates_pauses_and_schedules_a_listing(owner, client_as):
    server = make_server(owner, gpu_count=2, model="RTX 4090")
    client = client_as(owner)
    bad = client.post(
        reverse("marketplace:owner_listings"),
        {"server": server.pk, "price_per_gpu_hour": "0", "min_hours": 1, "max_hours": 10},
    )
    assert bad.status_code == 400 and not Listing.objects.exists()
    ok = client.post(
        reverse("marketplace:owner_listings"),
        {"server": server.pk, "price_per_gpu_hour": "0.39", "min_hours": 2, "max_hours": 48},
    )
    assert ok.status_code == 302
    listing = Listing.objects.get()
    assert (listing.min_duration_minutes, listing.max_duration_minutes) == (120, 2880)
    url = reverse("marketplace:owner_listing_edit", args=[listing.pk])
    client.post(url, {"action": "pause"})
    listing.refresh_from_db()
    assert listing.status == "paused"
    weekly = client.post(
        url, {"action": "weekly", "weekly-weekday": 0, "weekly-start_time": "09:00", "weekly-end_time": "00:00"}
    )
    assert weekly.status_code == 302
    rule = listing.rules.get()
    assert (rule.weekday, rule.start_minute, rule.end_minute) == (0, 540, 1440)
    bad_window = client.post(
        url, {"action": "window", "window-start": "2030-01-02T10:00", "window-end": "2030-01-02T09:00"}
    )
    assert bad_window.status_code == 400 and listing.rules.count() == 1
    client.post(url, {"action": "delete_rule", "rule": rule.pk})
    listing.refresh_from_db()
    assert listing.rules.count() == 0 and listing.always_available


def test_a_renter_cannot_open_owner_market_pages(renter, client_as):
    assert client_as(renter).get(reverse("marketplace:owner_listings")).status_code == 403
    assert client_as(renter).get(reverse("marketplace:owner_earnings")).status_code == 403


def test_invoice_of_a_booking_cancelled_after_its_start_adds_up(owner, renter, client_as):
    listing = make_listing(owner, price="2.49", gpu_count=2)
    booking = bookings.booking_pay(
        booking=bookings.booking_create(
            renter=renter, listing=listing, gpu_count=2, start=next_hour(1), end=next_hour(4)
        ),
        renter=renter,
    )
    bookings.booking_cancel(booking=booking, renter=renter, now=booking.start + timedelta(minutes=30))
    invoice = client_as(renter).get(reverse("marketplace:invoice", args=[booking.public_id])).context["invoice"]
    assert [line.amount for line in invoice.lines] == [booking.amount, -invoice.refunded]
    assert invoice.paid + sum(line.amount for line in invoice.lines[1:]) == invoice.net
    assert invoice.net == sum(s.gross_amount for s in booking.settlements.all())  # what the owner earned
