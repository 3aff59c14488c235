"""Failover keeps the booked region unless the renter allowed others, and says what moved and why
(simulated clusters, two regions): the job's event and message name both servers and regions and
the reason, or that no equivalent GPU was free in the region and the rest was refunded."""

from datetime import timedelta
from decimal import Decimal

import pytest

from marketplace.models import Booking, Refund
from marketplace.services import bookings
from scheduler.backends.simulated import SimulatedBackend
from scheduler.models import Job, JobEvent
from scheduler.services import clusters, jobs
from tests.factories import make_listing, make_owner, next_hour

IMAGE = "nvcr.io/nvidia/pytorch:24.05-py3"
US_EAST = "US East (Ashburn)"
EU_CENTRAL = "EU Central (Frankfurt)"


@pytest.fixture
def regions(db):
    """gpu-a (us-east, where the renter books), gpu-eu (eu-central, cheaper), each its owner's simulated cluster."""
    owner_a, owner_b = make_owner(), make_owner()
    a = make_listing(owner_a, gpu_count=2, price="2.00", hostname="gpu-a", region="us-east")
    eu = make_listing(owner_b, gpu_count=2, price="1.50", hostname="gpu-eu", region="eu-central")
    sim_a = clusters.cluster_create_simulated(owner=owner_a.owner_membership.company, name="a")
    clusters.cluster_create_simulated(owner=owner_b.owner_membership.company, name="b")
    return a, eu, sim_a, owner_b


def _run_and_fail(renter, listing, sim, *, allow_other_regions: bool):
    start = next_hour(1)
    booking = bookings.booking_pay(
        booking=bookings.booking_create(
            renter=renter, listing=listing, gpu_count=2, start=start, end=start + timedelta(hours=4)
        ),
        renter=renter,
    )
    job = jobs.job_submit(
        booking=booking,
        renter=renter,
        name="train",
        image=IMAGE,
        command=["python", "train.py"],
        gpu_count=2,
        allow_other_regions=allow_other_regions,
        now=start - timedelta(minutes=5),
    )
    jobs.jobs_tick(now=start)
    jobs.jobs_tick(now=start + timedelta(minutes=30))
    failed_at = start + timedelta(hours=1)
    clusters.simulated_node_set_ready(cluster=sim, node_name="gpu-a", ready=False, now=failed_at)
    outcome = jobs.jobs_tick(now=failed_at + timedelta(minutes=1))
    job.refresh_from_db()
    booking.refresh_from_db()
    return job, booking, outcome


def test_failover_stays_in_the_booked_region_and_refunds_when_none_is_free_there(regions, renter):
    a, _, sim_a, _ = regions
    job, booking, outcome = _run_and_fail(renter, a, sim_a, allow_other_regions=False)
    # the only equivalent GPU is in eu-central, which the renter did not allow
    assert outcome.get("interrupted") == 1 and outcome.get("failover") is None
    assert booking.listing_id == a.pk and booking.server_id == a.server_id
    message = f"No equivalent GPU in {US_EAST}; other regions were not allowed, so the remaining time was refunded."
    assert job.status == Job.Status.INTERRUPTED and job.message == message
    assert JobEvent.objects.filter(job=job, kind="refunded", message=message).count() == 1
    assert Refund.objects.filter(booking=booking, reason=Refund.Reason.DOWNTIME).exists()


def test_failover_to_another_region_when_allowed_says_what_moved_and_why(regions, renter):
    a, eu, sim_a, _ = regions
    job, booking, outcome = _run_and_fail(renter, a, sim_a, allow_other_regions=True)
    assert outcome.get("failover") == 1
    assert booking.listing_id == eu.pk and booking.server_id == eu.server_id
    moved = f"Moved from gpu-a ({US_EAST}) to gpu-eu ({EU_CENTRAL}) because Evicted: the node became NotReady."
    assert list(JobEvent.objects.filter(job=job, kind="failover").values_list("message", flat=True)) == [moved]
    assert job.status == Job.Status.PENDING and job.attempt == 2 and job.node_name == "gpu-eu"
    assert booking.status in Booking.PAID_LIVE


def test_failover_in_the_booked_region_is_taken_over_a_cheaper_one_abroad(regions, renter):
    a, _, sim_a, owner_b = regions
    same = make_listing(owner_b, gpu_count=2, price="1.90", hostname="gpu-b", region="us-east")
    cluster_b = owner_b.owner_membership.company.clusters.get()
    SimulatedBackend(cluster_b).add_node(name="gpu-b", gpus=2, product="NVIDIA-H100 80GB")
    clusters.cluster_sync(cluster=cluster_b)
    job, booking, outcome = _run_and_fail(renter, a, sim_a, allow_other_regions=False)
    assert outcome.get("failover") == 1
    assert booking.server_id == same.server_id and booking.price_per_gpu_hour == Decimal("2.00")
    assert job.message.startswith(f"Moved from gpu-a ({US_EAST}) to gpu-b ({US_EAST}) because Evicted")
    assert job.message.endswith("Created on gpu-b; waiting for the pod.")
