"""A booking takes its share of the server's CPU and memory, not only GPUs.

The share is the listing's CPU and memory per GPU (or the server split evenly
over its GPUs) × the booked GPUs, or the renter's minimum if larger. It is
checked free for the window under the server lock like the GPUs, moves with
the booking, bounds the pods of the booking, and every change to what a server
can take is written to the allocation change feed in the same transaction.

Servers from ``make_server`` declare 64 cores and 256 GiB (262,144 MiB)."""

from datetime import timedelta
from decimal import Decimal

import pytest
import yaml
from django.core.exceptions import ValidationError
from django.db import connection
from django.urls import reverse

from core.errors import ConflictError
from marketplace.models import AllocationChange, Booking, BookingGpu, Gpu, Listing
from marketplace.services import bookings, inventory, listings
from marketplace.services.allocation import note_allocation_change
from tests.api_errors import field_errors
from tests.concurrency import race
from tests.factories import make_listing, make_owner, make_renter, next_hour

pytestmark = pytest.mark.django_db

H = timedelta(hours=1)
CORES = 1000  # millicores
GIB = 1024  # MiB


def book(renter, listing, n=1, start=None, hours=2, **kw):
    start = start or next_hour(2)
    return bookings.booking_create(
        renter=renter, listing=listing, gpu_count=n, start=start, end=start + hours * H, **kw
    )


def changes() -> list[int]:
    """Server ids of the change feed, in order; the feed is emptied for the next step."""
    ids = list(AllocationChange.objects.order_by("id").values_list("server_id", flat=True))
    AllocationChange.objects.all().delete()
    return ids


# --- The share a booking takes --------------------------------------------------------------


def test_a_booking_takes_the_even_split_when_the_listing_sets_no_share(owner, renter):
    listing = make_listing(owner, gpu_count=4)

    booking = book(renter, listing, n=2)

    # 64 cores and 256 GiB over 4 GPUs, × 2
    assert (booking.cpu_milli, booking.memory_mib) == (32 * CORES, 128 * GIB)
    assert listing.share_label == "16 cores and 64 GiB per GPU"


def test_a_booking_takes_the_listings_share_per_gpu(owner, renter):
    listing = make_listing(owner, gpu_count=4)
    listings.listing_update(
        listing=listing,
        price_per_gpu_hour=listing.price_per_gpu_hour,
        min_duration_minutes=60,
        max_duration_minutes=600,
        cpu_milli_per_gpu=8 * CORES,
        memory_mib_per_gpu=32 * GIB,
    )

    booking = book(renter, listing, n=3)

    assert (booking.cpu_milli, booking.memory_mib) == (24 * CORES, 96 * GIB)
    assert Listing.objects.get(pk=listing.pk).share_label == "8 cores and 32 GiB per GPU"


def test_a_renter_minimum_above_the_share_is_taken(owner, renter):
    listing = make_listing(owner, gpu_count=4)

    booking = book(renter, listing, n=1, cpu_milli=40 * CORES, memory_mib=GIB)

    # CPU: the minimum (40 > 16 cores); memory: the share (64 GiB > 1 GiB)
    assert (booking.cpu_milli, booking.memory_mib) == (40 * CORES, 64 * GIB)
    assert Booking.objects.get(pk=booking.pk).cpu_milli == 40 * CORES


def test_a_server_out_of_cpu_refuses_the_booking_and_writes_nothing(owner, renter):
    # Given 4 GPUs of which one is booked with 60 of the 64 cores
    listing = make_listing(owner, gpu_count=4)
    start = next_hour(2)
    book(make_renter(), listing, n=1, start=start, cpu_milli=60 * CORES)
    rows = (Booking.objects.count(), BookingGpu.objects.count(), AllocationChange.objects.count())

    # When another renter asks for 1 GPU (its even split: 16 cores) for an overlapping window
    with pytest.raises(ConflictError) as refused:
        book(renter, listing, n=1, start=start + H)

    # Then a clear refusal, and no booking, hold or change row was written
    assert "Only 4 of 64 CPU cores are free on that server for that time" in str(refused.value.message_dict)
    assert (Booking.objects.count(), BookingGpu.objects.count(), AllocationChange.objects.count()) == rows
    # A window after the CPU-heavy booking is free again
    assert book(renter, listing, n=1, start=start + 2 * H).cpu_milli == 16 * CORES


def test_memory_binds_too(owner, renter):
    listing = make_listing(owner, gpu_count=4)
    start = next_hour(2)
    book(make_renter(), listing, n=1, start=start, memory_mib=250 * GIB)

    with pytest.raises(ConflictError) as refused:
        book(renter, listing, n=1, start=start)

    assert "Only 6 of 256 GiB of RAM are free" in str(refused.value.message_dict)


def test_bookings_one_after_the_other_do_not_both_count_against_one_spanning_them(owner, renter):
    # Given 48 cores taken for [0, 2 h) and 48 more for [2 h, 4 h), on different GPUs
    listing = make_listing(owner, gpu_count=4)
    start = next_hour(2)
    book(make_renter(), listing, n=1, start=start, hours=2, cpu_milli=48 * CORES)
    book(make_renter(), listing, n=1, start=start + 2 * H, hours=2, cpu_milli=48 * CORES)

    # When a booking spans both windows with 16 cores: at most 48 + 16 = 64 are in use at once
    spanning = book(renter, listing, n=1, start=start, hours=4)

    assert spanning.cpu_milli == 16 * CORES
    # but 17 cores would not fit beside either of them
    with pytest.raises(ConflictError):
        book(renter, listing, n=1, start=start, hours=4, cpu_milli=17 * CORES)


# --- Move -----------------------------------------------------------------------------------


def _paid(renter, listing, **kw):
    return bookings.booking_pay(booking=book(renter, listing, **kw), renter=renter)


def test_a_move_keeps_the_share_or_takes_the_targets_if_larger(owner, renter):
    # Given a paid booking of 2 GPUs with the even split of a 4-GPU server (32 cores, 128 GiB)
    source = make_listing(owner, gpu_count=4, price="3.00")
    booking = _paid(renter, source, n=2)
    same = make_listing(owner, gpu_count=8, price="2.00")  # even split: 8 cores, 32 GiB per GPU
    larger = make_listing(owner, gpu_count=2, price="2.00")
    listings.listing_update(
        listing=larger,
        price_per_gpu_hour=Decimal("2.00"),
        min_duration_minutes=60,
        max_duration_minutes=30 * 24 * 60,
        cpu_milli_per_gpu=20 * CORES,
    )
    at = booking.start + timedelta(minutes=30)

    # When it moves to a server with a smaller share, it keeps what it had
    moved = bookings.booking_move(booking=booking, listing=same, at=at)
    assert (moved.server_id, moved.cpu_milli, moved.memory_mib) == (same.server_id, 32 * CORES, 128 * GIB)

    # And to one whose share is larger, it takes that share there (2 × 20 cores; memory: 2 × 128 GiB)
    moved = bookings.booking_move(booking=moved, listing=larger, at=at + H)
    assert (moved.cpu_milli, moved.memory_mib) == (40 * CORES, 256 * GIB)
    assert Booking.objects.get(pk=booking.pk).cpu_milli == 40 * CORES


def test_a_move_to_a_server_without_the_cpu_is_refused(owner, renter):
    source = make_listing(owner, gpu_count=4, price="3.00")
    booking = _paid(renter, source, n=2)  # 32 cores
    target = make_listing(owner, gpu_count=4, price="2.00")
    book(make_renter(), target, n=1, start=booking.start, cpu_milli=40 * CORES)  # 24 cores left there

    with pytest.raises(ConflictError) as refused:
        bookings.booking_move(booking=booking, listing=target, at=booking.start)

    assert "Only 24 of 64 CPU cores are free" in str(refused.value.message_dict)
    booking.refresh_from_db()
    assert booking.server_id == source.server_id
    assert BookingGpu.objects.filter(booking=booking, server_id=target.server_id).count() == 0


# --- The change feed ------------------------------------------------------------------------


def test_each_mutation_writes_a_change_row_for_exactly_the_servers_it_touched(owner, renter):
    a = make_listing(owner, gpu_count=4, price="3.00")
    b = make_listing(owner, gpu_count=4, price="2.00")
    changes()

    pending = book(renter, a, n=1)
    assert changes() == [a.server_id]
    bookings.booking_cancel(booking=pending, renter=renter)
    assert changes() == [a.server_id]

    unpaid = book(renter, b, n=1)
    changes()
    bookings.bookings_tick(now=unpaid.expires_at + timedelta(seconds=1))  # expires the unpaid hold
    assert changes() == [b.server_id]

    paid = _paid(renter, a, n=2)
    changes()
    bookings.booking_move(booking=paid, listing=b, at=paid.start + H)
    assert sorted(changes()) == sorted([a.server_id, b.server_id])
    bookings.booking_interrupt(booking=paid, failed_at=paid.start + H + H / 2, resumed_at=None, key="f1")
    assert changes() == [b.server_id]

    listings.listing_set_status(listing=a, status=Listing.Status.PAUSED)
    assert changes() == [a.server_id]
    listings.listing_update(
        listing=b, price_per_gpu_hour=Decimal("1.50"), min_duration_minutes=60, max_duration_minutes=600
    )
    assert changes() == [b.server_id]
    inventory.gpu_status_set(gpu=Gpu.objects.filter(server_id=a.server_id).first(), status=Gpu.Status.MAINTENANCE)
    assert changes() == [a.server_id]


def test_a_refused_booking_writes_no_change_and_old_rows_are_pruned_by_the_tick(owner, renter):
    listing = make_listing(owner, gpu_count=1)
    start = next_hour(2)
    book(renter, listing, n=1, start=start)
    changes()
    with pytest.raises(ConflictError):
        book(renter, listing, n=1, start=start)
    assert changes() == []

    note_allocation_change([listing.server_id, listing.server_id])
    AllocationChange.objects.update(changed_at=start - timedelta(days=3))
    note_allocation_change([listing.server_id])  # a recent one stays
    bookings.bookings_tick(now=start - timedelta(days=1))

    assert AllocationChange.objects.count() == 1


# --- The listing's share: form and API ------------------------------------------------------


def test_the_listing_api_refuses_a_share_larger_than_the_server(owner, api_as):
    from tests.factories import make_server

    server = make_server(owner, gpu_count=4)
    client = api_as(owner)
    url = reverse("api:owner-listing-list")

    too_much = client.post(
        url, {"server": server.pk, "price_per_gpu_hour": "1.00", "cpu_milli_per_gpu": 17 * CORES}, format="json"
    )
    assert too_much.status_code == 400
    assert "more than the server's 64 cores; at most 16 cores per GPU" in field_errors(too_much)["cpu_milli_per_gpu"][0]
    assert not Listing.objects.exists()

    created = client.post(
        url,
        {"server": server.pk, "price_per_gpu_hour": "1.00", "cpu_milli_per_gpu": 16 * CORES, "memory_mib_per_gpu": GIB},
        format="json",
    )
    assert created.status_code == 201
    assert (created.json()["cpu_milli_per_gpu"], created.json()["memory_mib_per_gpu"]) == (16 * CORES, GIB)

    detail = reverse("api:owner-listing-detail", args=[created.json()["id"]])
    bad = client.put(detail, {"price_per_gpu_hour": "1.00", "memory_mib_per_gpu": 65 * GIB}, format="json")
    assert bad.status_code == 400 and "at most 65536 MiB per GPU" in field_errors(bad)["memory_mib_per_gpu"][0]
    # A PUT without the share fields leaves them as they are
    assert client.put(detail, {"price_per_gpu_hour": "1.10"}, format="json").status_code == 200
    assert Listing.objects.values_list("cpu_milli_per_gpu", "memory_mib_per_gpu").get() == (16 * CORES, GIB)


def test_the_listing_form_refuses_a_share_larger_than_the_server(owner, client_as):
    listing = make_listing(owner, gpu_count=4)
    client = client_as(owner)
    url = reverse("marketplace:owner_listing_edit", args=[listing.pk])
    terms = {"action": "terms", "price_per_gpu_hour": "2.00", "min_hours": 1, "max_hours": 10}

    refused = client.post(url, {**terms, "cpu_milli_per_gpu": 20 * CORES})
    assert refused.status_code == 400
    assert "at most 16 cores per GPU" in refused.content.decode()

    assert client.post(url, {**terms, "cpu_milli_per_gpu": 8 * CORES}).status_code == 302
    listing.refresh_from_db()
    assert (listing.cpu_milli_per_gpu, listing.memory_mib_per_gpu) == (8 * CORES, None)
    page = client.get(reverse("marketplace:listing_detail", args=[listing.pk])).content.decode()
    assert "8 cores and 64 GiB per GPU" in page


def test_a_server_cannot_shrink_below_its_listings_share(owner):
    listing = make_listing(owner, gpu_count=4)
    listings.listing_update(
        listing=listing,
        price_per_gpu_hour=listing.price_per_gpu_hour,
        min_duration_minutes=60,
        max_duration_minutes=600,
        cpu_milli_per_gpu=16 * CORES,
    )
    server = listing.server

    with pytest.raises(ValidationError) as refused:
        inventory.server_update(
            server=server,
            hostname=server.hostname,
            region=server.region,
            cpu_milli=32 * CORES,
            memory_mib=server.memory_mib,
        )

    assert "cpu_milli" in refused.value.message_dict
    server.refresh_from_db()
    assert server.cpu_milli == 64 * CORES


# --- The pod spec requests the booking's share ------------------------------------------------


def test_a_job_requests_90_percent_of_its_part_of_the_bookings_share(owner, renter, kube_cluster, settings):
    from scheduler.services import clusters, jobs

    settings.SCHEDULER_KUBE_TIMEOUT_SECONDS = 2
    settings.SCHEDULER_KUBE_RETRIES = 2
    settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]
    # Given a 2-GPU server (64 cores, 256 GiB) booked whole with 40 cores asked (less than the even split: 64)
    # and a listing share of 8 cores and 32 GiB per GPU: the booking takes 40 cores and 64 GiB
    listing = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-a")
    listings.listing_update(
        listing=listing,
        price_per_gpu_hour=Decimal("2.00"),
        min_duration_minutes=60,
        max_duration_minutes=600,
        cpu_milli_per_gpu=8 * CORES,
        memory_mib_per_gpu=32 * GIB,
    )
    kube_cluster.add_node("gpu-a", gpus=2, cpu="64")
    clusters.cluster_connect(
        owner=owner.owner_membership.company, name="prod", kubeconfig=yaml.safe_dump(kube_cluster.kubeconfig)
    )
    start = next_hour(1)
    booking = _paid(renter, listing, n=2, start=start, cpu_milli=40 * CORES)
    assert (booking.cpu_milli, booking.memory_mib) == (40 * CORES, 64 * GIB)

    # When a job uses 1 of its 2 GPUs
    job = jobs.job_submit(
        booking=booking,
        renter=renter,
        name="train",
        image="nvcr.io/nvidia/pytorch:24.05-py3",
        command=["python", "train.py"],
        env={},
        gpu_count=1,
        now=start - timedelta(minutes=1),
    )
    assert jobs.jobs_tick(now=start).get("launched") == 1
    job.refresh_from_db()

    # Then its pod is limited to half the booking's share and requests 90 % of that
    pod = kube_cluster.stored("batch/v1/jobs", job.namespace, job.k8s_name)["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1", "cpu": "20000m", "memory": "32768Mi"}
    assert container["resources"]["requests"] == {"nvidia.com/gpu": "1", "cpu": "18000m", "memory": "29491Mi"}


# --- Races on PostgreSQL --------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_threads_booking_the_last_cpu_of_a_server_exactly_one_wins(catalogue):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL); CI runs it there")
    # Given 8 free GPUs but CPU for one booking of 40 cores (64 in all), and 8 renters asking for it at once
    listing = make_listing(make_owner(), gpu_count=8, price="3.10")
    renters = [make_renter() for _ in range(8)]
    start = next_hour(3)

    outcomes = race(8, lambda i: book(renters[i], listing, n=1, start=start, cpu_milli=40 * CORES))

    assert outcomes.count("ok") == 1, outcomes
    assert all("CPU cores are free on that server" in o for o in outcomes if o != "ok"), outcomes
    assert Booking.objects.count() == 1 and BookingGpu.objects.count() == 1
    assert AllocationChange.objects.filter(server_id=listing.server_id).count() == 2  # listing created, one booking
