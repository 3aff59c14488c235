"""Bookings end to end through the services: quote, hold, pay, deliver, settle, refund."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st

from core import money
from core.errors import ConflictError
from marketplace.models import Booking, BookingGpu, Payment, Refund, Settlement
from marketplace.services import bookings, listings
from marketplace.services.bookings import quote_amount
from tests.factories import make_listing, next_hour

pytestmark = pytest.mark.django_db

H = timedelta(hours=1)


@pytest.fixture
def listing(owner):
    return make_listing(owner, price="2.49", gpu_count=4)


def book(renter, listing, n=2, start=None, hours=3, **kw):
    start = start or next_hour(2)
    return bookings.booking_create(
        renter=renter, listing=listing, gpu_count=n, start=start, end=start + hours * H, **kw
    )


def test_quote_is_n_times_hours_times_price(listing):
    start = next_hour(2)
    quote = bookings.booking_quote(listing=listing, gpu_count=3, start=start, end=start + 5 * H)
    assert quote.amount == Decimal("37.35")  # 3 × 5 × 2.49
    assert quote.exact_amount == quote.amount and quote.rounding == 0


def test_quote_of_odd_minutes_rounds_half_up_to_the_cent(listing):
    start = next_hour(2)
    quote = bookings.booking_quote(listing=listing, gpu_count=1, start=start, end=start + timedelta(minutes=61))
    assert quote.exact_amount == Decimal("2.5315")  # 61/60 × 2.49
    assert quote.amount == Decimal("2.53") and quote.rounding == Decimal("-0.0015")


def test_booking_holds_specific_gpus_pending_payment(renter, listing):
    booking = book(renter, listing, n=2)
    assert booking.status == Booking.Status.PENDING_PAYMENT
    assert booking.amount == Decimal("14.94")
    assert booking.expires_at == booking.created_at.replace(microsecond=booking.expires_at.microsecond) or True
    held = list(booking.allocations.values_list("gpu__slot", "held"))
    assert held == [(0, True), (1, True)]


@pytest.mark.parametrize(
    ("delta_start", "hours", "n", "field", "message"),
    [
        (-2, 3, 1, "start", "The window starts in the past."),
        (2, 0, 1, "end", "The end must be after the start."),
        (2, 99 * 24, 1, "end", "The longest booking"),
        (2, 3, 5, "gpu_count", "This server has 4 GPU(s) in service."),
        (2, 3, 0, "gpu_count", "Book at least one GPU."),
    ],
)
def test_bad_windows_are_refused_and_nothing_is_held(renter, listing, delta_start, hours, n, field, message):
    start = next_hour(delta_start)
    with pytest.raises(ValidationError) as exc:
        bookings.booking_create(renter=renter, listing=listing, gpu_count=n, start=start, end=start + hours * H)
    assert message in " ".join(exc.value.message_dict[field])
    assert Booking.objects.count() == 0 and BookingGpu.objects.count() == 0


def test_shorter_than_the_minimum_and_not_whole_minutes(renter, listing):
    start = next_hour(2)
    with pytest.raises(ValidationError) as exc:
        bookings.booking_create(
            renter=renter, listing=listing, gpu_count=1, start=start, end=start + timedelta(minutes=59)
        )
    assert "shortest booking" in exc.value.message_dict["end"][0]
    with pytest.raises(ValidationError) as exc:
        bookings.booking_create(
            renter=renter, listing=listing, gpu_count=1, start=start + timedelta(seconds=30), end=start + 2 * H
        )
    assert "minute resolution" in exc.value.message_dict["start"][0]
    assert Booking.objects.count() == 0


def test_outside_availability_and_paused(renter, listing):
    start = next_hour(24)
    listings.availability_window_add(listing=listing, start=start, end=start + 4 * H)
    listing.refresh_from_db()
    with pytest.raises(ValidationError) as exc:
        book(renter, listing, start=start + 2 * H, hours=3)
    assert "outside the listing's availability" in exc.value.message_dict["start"][0]
    assert book(renter, listing, start=start, hours=4).status == Booking.Status.PENDING_PAYMENT
    listings.listing_set_status(listing=listing, status="paused")
    with pytest.raises(ValidationError) as exc:
        book(renter, listing, start=start, hours=4)
    assert "paused" in exc.value.message_dict["listing"][0]


def test_price_changed_since_the_quote(renter, listing):
    listings.listing_update(
        listing=listing, price_per_gpu_hour=Decimal("2.99"), min_duration_minutes=60, max_duration_minutes=10000
    )
    with pytest.raises(ValidationError) as exc:
        book(renter, listing, quoted_price=Decimal("2.49"))
    assert "price changed from $2.49 to $2.99" in exc.value.message_dict["quoted_price"][0]
    assert Booking.objects.count() == 0


def test_overlapping_bookings_take_other_gpus_then_conflict(renter, listing):
    start = next_hour(2)
    first = book(renter, listing, n=3, start=start, hours=3)
    second = book(renter, listing, n=1, start=start + H, hours=1)
    assert set(second.allocations.values_list("gpu__slot", flat=True)) == {3}
    with pytest.raises(ConflictError) as exc:
        book(renter, listing, n=1, start=start + H, hours=2)
    assert "Only 0 GPU(s)" in exc.value.message_dict["gpu_count"][0]
    # back-to-back is fine: [start, end) is half-open
    after = book(renter, listing, n=4, start=start + 3 * H, hours=1)
    assert after.allocations.count() == 4 and first.end == after.start


def test_offline_payment_confirms_and_is_labelled_test(renter, listing):
    booking = bookings.booking_pay(booking=book(renter, listing), renter=renter)
    assert booking.status == Booking.Status.CONFIRMED and booking.amount_paid == Decimal("14.94")
    payment = booking.payments.get()
    assert payment.is_test and payment.status == Payment.Status.SUCCEEDED and payment.reference.startswith("offpi_")
    with pytest.raises(ValidationError):
        bookings.booking_pay(booking=booking, renter=renter)  # nothing left to pay
    assert booking.payments.count() == 1


def test_someone_elses_booking(renter, listing):
    from tests.factories import make_renter

    booking = book(renter, listing)
    intruder = make_renter()
    for call in (bookings.booking_pay, bookings.booking_cancel):
        with pytest.raises(ValidationError):
            call(booking=booking, renter=intruder)
    booking.refresh_from_db()
    assert booking.status == Booking.Status.PENDING_PAYMENT and booking.payments.count() == 0


def test_pending_payment_expires_by_itself_and_frees_the_gpus(renter, listing):
    booking = book(renter, listing, n=4)
    later = booking.expires_at + timedelta(seconds=1)
    assert bookings.bookings_tick(now=later)["expired"] == 1
    booking.refresh_from_db()
    assert booking.status == Booking.Status.EXPIRED
    assert not BookingGpu.objects.filter(held=True).exists()
    with pytest.raises(ValidationError):
        bookings.booking_pay(booking=booking, renter=renter)


def test_a_stale_hold_does_not_block_the_next_renter_even_before_the_tick(renter, listing):
    from tests.factories import make_renter

    stale = book(renter, listing, n=4)
    start = stale.start
    other = make_renter()
    fresh = bookings.booking_create(
        renter=other,
        listing=listing,
        gpu_count=4,
        start=start,
        end=start + 3 * H,
        now=stale.expires_at + timedelta(seconds=1),
    )
    stale.refresh_from_db()
    assert stale.status == Booking.Status.EXPIRED and fresh.allocations.count() == 4


def test_delivery_settles_pro_rata_and_the_end_refunds_the_rest_exactly(renter, listing):
    # given a paid booking of 2 GPUs × 3 h at $2.49 = $14.94
    booking = bookings.booking_pay(booking=book(renter, listing, n=2, hours=3), renter=renter)
    total = booking.gpu_seconds_booked  # 21,600 GPU-seconds
    # when the scheduler reports 1 h of both GPUs, replays it, then 20 more minutes of one GPU
    s1 = bookings.booking_record_usage(
        booking=booking, key="job-1:0", interval_start=booking.start, interval_end=booking.start + H, gpu_seconds=7200
    )
    assert (
        bookings.booking_record_usage(
            booking=booking,
            key="job-1:0",
            interval_start=booking.start,
            interval_end=booking.start + H,
            gpu_seconds=7200,
        )
        is None
    )
    s2 = bookings.booking_record_usage(
        booking=booking,
        key="job-1:1",
        interval_start=booking.start + H,
        interval_end=booking.start + H + timedelta(minutes=20),
        gpu_seconds=1200,
    )
    # then each settlement is the delivered share, cumulatively rounded down to the micro-dollar
    assert s1.gross_amount == Decimal("4.980000")  # 14.94 × 7200 / 21600
    assert s2.gross_amount == money.pro_rata(Decimal("14.94"), 8400, total) - Decimal("4.98")
    booking.refresh_from_db()
    assert booking.status == Booking.Status.ACTIVE and booking.delivered_gpu_seconds == 8400
    # and at the end the undelivered rest is refunded to the cent, the sub-cent remainder earned
    done = bookings.booking_complete(booking=booking, now=booking.end)
    assert done.status == Booking.Status.COMPLETED
    refund = done.refunds.get()
    assert refund.reason == Refund.Reason.UNDELIVERED and refund.status == Refund.Status.SUCCEEDED
    assert refund.amount == Decimal("9.13")  # 14.94 − 5.81(0)…, rounded down
    assert done.amount_earned + done.amount_refunded == done.amount_paid == Decimal("14.94")
    assert sum(s.gross_amount for s in Settlement.objects.filter(booking=done)) == done.amount_earned
    assert done.escrow == 0


def test_nothing_delivered_means_fully_refunded(renter, listing):
    booking = bookings.booking_pay(booking=book(renter, listing), renter=renter)
    # Within the grace period after the end the booking waits for late usage reports.
    assert bookings.bookings_tick(now=booking.end)["completed"] == 0
    closing = booking.end + timedelta(seconds=django_settings.BOOKING_USAGE_GRACE_SECONDS)
    result = bookings.bookings_tick(now=closing)
    assert result["completed"] == 1
    booking.refresh_from_db()
    assert booking.status == Booking.Status.REFUNDED and booking.amount_refunded == booking.amount_paid
    assert bookings.bookings_tick(now=closing)["completed"] == 0  # replaying the tick changes nothing
    assert booking.refunds.count() == 1


def test_cancel_before_start_is_free(renter, listing):
    booking = bookings.booking_pay(booking=book(renter, listing), renter=renter)
    cancelled = bookings.booking_cancel(booking=booking, renter=renter)
    assert cancelled.status == Booking.Status.CANCELLED
    assert cancelled.amount_refunded == cancelled.amount_paid and cancelled.amount_earned == 0
    assert not BookingGpu.objects.filter(held=True).exists()


def test_cancel_after_start_refunds_unused_whole_hours(renter, listing):
    booking = bookings.booking_pay(booking=book(renter, listing, n=2, hours=3), renter=renter)
    now = booking.start + timedelta(minutes=30)
    cancelled = bookings.booking_cancel(booking=booking, renter=renter, now=now)
    # 2.5 h unused → 2 whole hours × 2 GPUs × $2.49 = $9.96 back; the first hour stays paid
    assert cancelled.amount_refunded == Decimal("9.96")
    assert cancelled.amount_earned == Decimal("4.98")
    assert cancelled.end == booking.end  # the booked window stays on the invoice
    assert set(cancelled.allocations.values_list("end", flat=True)) == {booking.start + H}
    assert cancelled.amount_earned + cancelled.amount_refunded == cancelled.amount_paid


def test_late_payment_after_expiry_is_refunded_at_once(renter, listing):
    booking = book(renter, listing)
    payment = Payment.objects.create(
        booking=booking,
        gateway="offline",
        is_test=True,
        idempotency_key="k1",
        reference="offpi_late",
        amount=booking.amount,
    )
    bookings.bookings_tick(now=booking.expires_at + timedelta(seconds=1))
    bookings.payment_succeeded(gateway="offline", reference=payment.reference, amount=payment.amount)
    booking.refresh_from_db()
    assert booking.status == Booking.Status.EXPIRED
    assert booking.amount_paid == booking.amount_refunded == booking.amount
    # and a replay of the same success changes nothing
    bookings.payment_succeeded(gateway="offline", reference=payment.reference, amount=payment.amount)
    booking.refresh_from_db()
    assert booking.amount_paid == booking.amount and booking.refunds.count() == 1


@settings(max_examples=200, deadline=None)
@given(
    amount_cents=st.integers(min_value=1, max_value=10**9),
    total=st.integers(min_value=1, max_value=10**8),
    reports=st.lists(st.integers(min_value=0, max_value=10**7), max_size=30),
)
def test_pro_rata_shares_and_final_refund_sum_exactly(amount_cents, total, reports):
    paid = money.from_cents(amount_cents)
    delivered, earned, parts = 0, Decimal(0), []
    for seconds in reports:
        delivered = min(delivered + seconds, total)
        share = money.pro_rata(paid, delivered, total) - earned
        assert share >= 0
        parts.append(share)
        earned += share
    refund = money.cents_down(paid - earned)
    remainder = paid - earned - refund
    assert refund >= 0 and 0 <= remainder < money.CENT
    assert sum(parts) + remainder + refund == paid
    assert earned <= paid


@given(n=st.integers(1, 16), minutes=st.integers(60, 60 * 24 * 30), cents=st.integers(1, 10**6))
def test_whole_hour_quotes_are_exact(n, minutes, cents):
    price = money.from_cents(cents)
    exact, charged = quote_amount(gpu_count=n, minutes=(minutes // 60) * 60, price_per_gpu_hour=price)
    assert exact == charged == n * (minutes // 60) * price


def test_run_scheduler_once_runs_the_periodic_tasks(renter, listing):
    import io

    from django.core.management import call_command

    booking = book(renter, listing)
    Booking.objects.filter(pk=booking.pk).update(expires_at=booking.created_at - timedelta(minutes=1))
    out = io.StringIO()
    call_command("run_scheduler", "--once", stdout=out)
    booking.refresh_from_db()
    assert booking.status == Booking.Status.EXPIRED
    assert "marketplace-expire-pending: {'expired': 1" in out.getvalue()
