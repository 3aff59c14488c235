"""Concurrent writers on PostgreSQL: the database, not luck, keeps serials unique."""

import pytest
from django.db import connection

from marketplace.models import Gpu, Server
from tests.concurrency import race
from tests.factories import make_owner, make_server

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 8


@pytest.fixture(autouse=True)
def _needs_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL); CI runs it there")


def test_racing_owners_registering_the_same_serial_exactly_one_wins(catalogue):
    owners = [make_owner() for _ in range(THREADS)]
    outcomes = race(
        THREADS,
        lambda i: make_server(owners[i], hostname=f"race-{i}", gpu_count=2, serials=[f"UNIQ-{i}", "CONTESTED-SERIAL"]),
    )

    assert outcomes.count("ok") == 1
    assert all("CONTESTED-SERIAL" in o or "registered by someone else" in o for o in outcomes if o != "ok")
    # the winner's server has both its GPUs; the losers left nothing behind
    assert Gpu.objects.filter(serial="CONTESTED-SERIAL").count() == 1
    assert Server.objects.count() == 1
    assert Gpu.objects.count() == 2


BOOKING_THREADS = 32


def test_32_renters_racing_for_the_same_gpus_exactly_the_feasible_number_win(catalogue):
    from datetime import timedelta

    from marketplace.models import Booking, BookingGpu
    from marketplace.services.bookings import booking_create
    from tests.factories import make_listing, make_renter, next_hour

    # given 8 GPUs and 32 renters each wanting 2 of them for overlapping windows
    listing = make_listing(make_owner(), gpu_count=8, price="3.10")
    renters = [make_renter() for _ in range(BOOKING_THREADS)]
    start = next_hour(3)

    def attempt(i: int) -> None:
        # Windows shifted by 0–3 half-hours: every pair overlaps (each lasts 2 h).
        window_start = start + timedelta(minutes=30 * (i % 4))
        booking_create(
            renter=renters[i], listing=listing, gpu_count=2, start=window_start, end=window_start + timedelta(hours=2)
        )

    outcomes = race(BOOKING_THREADS, attempt)

    # then exactly 8 / 2 = 4 bookings hold GPUs and the other 28 got a clear conflict
    assert len(outcomes) == BOOKING_THREADS
    assert outcomes.count("ok") == 4
    assert all("GPU(s) of this server are free" in o or "just booked" in o for o in outcomes if o != "ok"), outcomes
    assert Booking.objects.count() == 4
    held = list(BookingGpu.objects.filter(held=True).values_list("gpu_id", "start", "end"))
    assert len(held) == 8
    for i, (gpu, s1, e1) in enumerate(held):
        for gpu2, s2, e2 in held[i + 1 :]:
            assert gpu != gpu2 or e1 <= s2 or e2 <= s1, "a GPU is held twice for overlapping time"


def test_the_database_refuses_an_overlapping_hold_even_without_the_service(catalogue):
    from datetime import timedelta

    from django.db import IntegrityError, transaction

    from marketplace.models import BookingGpu
    from marketplace.services.bookings import booking_create
    from tests.factories import make_listing, make_renter, next_hour

    listing = make_listing(make_owner(), gpu_count=1)
    start = next_hour(2)
    booking = booking_create(
        renter=make_renter(), listing=listing, gpu_count=1, start=start, end=start + timedelta(hours=2)
    )
    allocation = booking.allocations.get()
    later = booking_create(
        renter=make_renter(),
        listing=listing,
        gpu_count=1,
        start=start + timedelta(hours=2),
        end=start + timedelta(hours=3),
    )
    # an overlapping row written behind the service's back is refused by PostgreSQL
    with pytest.raises(IntegrityError), transaction.atomic():
        BookingGpu.objects.create(
            booking=later,
            gpu=allocation.gpu,
            server_id=allocation.server_id,
            start=start + timedelta(hours=1),
            end=start + timedelta(hours=3),
            held=True,
        )
    assert BookingGpu.objects.filter(gpu=allocation.gpu, held=True).count() == 2
