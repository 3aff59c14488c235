"""The scheduler end to end on the simulated cluster: clusters and node sync,
job submission and validation, the lifecycle driven by ``jobs_tick`` in
simulated time, metering into the marketplace, failover with its pro-rata
refund, garbage collection, quick book, pages and API."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from core import money
from marketplace.models import Booking, BookingGpu, Listing, Refund, Settlement, UsageRecord
from marketplace.services import bookings
from scheduler import crypto
from scheduler.backends.base import LABEL_JOB, LABEL_MANAGED_BY, MANAGED_BY, JobSpec, Phase
from scheduler.backends.simulated import SimulatedBackend
from scheduler.models import Cluster, Job, Node, SimJob
from scheduler.services import clusters, jobs, quickbook
from tests.api_errors import field_errors
from tests.factories import make_listing, make_owner, make_renter, next_hour

IMAGE = "nvcr.io/nvidia/pytorch:24.05-py3"


@pytest.fixture
def fleet(owner):
    """Two H100 servers of one owner, listed at $2.00, on one simulated cluster."""
    a = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-a")
    b = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-b")
    cluster = clusters.cluster_create_simulated(owner=owner.owner_membership.company, name="sim")
    return a, b, cluster


def paid_booking(renter, listing, *, hours=4, gpus=2, start=None) -> Booking:
    start = start or next_hour(1)
    booking = bookings.booking_create(
        renter=renter, listing=listing, gpu_count=gpus, start=start, end=start + timedelta(hours=hours)
    )
    return bookings.booking_pay(booking=booking, renter=renter)


def submit(booking, renter, **kwargs) -> Job:
    fields = {"name": "train", "image": IMAGE, "command": ["python", "train.py"], "gpu_count": booking.gpu_count}
    fields.update(kwargs)
    return jobs.job_submit(booking=booking, renter=renter, now=booking.start - timedelta(minutes=5), **fields)


# --- Clusters and nodes ----------------------------------------------------------------------


def test_simulated_cluster_nodes_match_servers(fleet):
    a, b, cluster = fleet
    nodes = {n.name: n for n in cluster.nodes.all()}
    assert set(nodes) == {"gpu-a", "gpu-b"}
    assert nodes["gpu-a"].server_id == a.server_id and nodes["gpu-b"].server_id == b.server_id
    assert nodes["gpu-a"].gpu_allocatable == 2 and nodes["gpu-a"].ready
    assert nodes["gpu-a"].mismatch == "" and cluster.health == Cluster.Health.HEALTHY


def test_node_sync_flags_what_differs_from_the_declaration(fleet):
    _, _, cluster = fleet
    backend = SimulatedBackend(cluster)
    backend.add_node(name="gpu-a", gpus=4, product="NVIDIA-A100-SXM4-80GB")  # the owner declared 2 × H100
    backend.add_node(name="stranger", gpus=8, product="NVIDIA-H100")
    clusters.cluster_sync(cluster=cluster)
    node = Node.objects.get(cluster=cluster, name="gpu-a")
    assert "4 gpu(s), the server declares 2" in node.mismatch.lower()
    assert "a100" in node.mismatch.lower() and "h100" in node.mismatch.lower()
    assert Node.objects.get(name="stranger").mismatch == "No server of yours has this hostname."
    assert Node.objects.get(name="stranger").server is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Paste or upload"),
        ("clusters: [unclosed", "not valid YAML"),
        ("just a string", "needs `clusters`"),
        (
            "clusters: [{name: c, cluster: {server: 'https://x'}}]\nusers: [{name: u, user: {token: t}}]\n"
            "contexts: [{name: ctx, context: {cluster: c, user: u}}]\ncurrent-context: other\n",
            "current-context",
        ),
        (
            "clusters: [{name: c, cluster: {server: 'https://x'}}]\n"
            "users: [{name: u, user: {exec: {command: aws}}}]\n"
            "contexts: [{name: ctx, context: {cluster: c, user: u}}]\ncurrent-context: ctx\n",
            "Credential plugins",
        ),
    ],
)
def test_malformed_kubeconfig_is_refused_with_a_reason(owner, text, message):
    with pytest.raises(ValidationError) as exc:
        clusters.cluster_connect(owner=owner.owner_membership.company, name="prod", kubeconfig=text)
    assert message in str(exc.value.message_dict["kubeconfig"])
    assert not Cluster.objects.exists()


def test_kubeconfig_and_env_are_sealed_at_rest(settings):
    from cryptography.fernet import Fernet

    settings.SCHEDULER_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    token = crypto.seal_json({"HF_TOKEN": "hf_secret"})
    assert "hf_secret" not in token
    assert crypto.unseal_json(token) == {"HF_TOKEN": "hf_secret"}
    # Rotation: a new key first, the old one still opens what it sealed.
    settings.SCHEDULER_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), *settings.SCHEDULER_ENCRYPTION_KEYS]
    assert crypto.unseal_json(token) == {"HF_TOKEN": "hf_secret"}
    settings.SCHEDULER_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    with pytest.raises(ValueError, match="no longer configured"):
        crypto.unseal(token)


# --- Submission ----------------------------------------------------------------------------------


def test_submit_validates_every_field(fleet, renter):
    booking = paid_booking(renter, fleet[0])
    cases = [
        ({"image": "UPPER/Case:tag"}, "image"),
        ({"image": "nvcr.io/nvidia/pytorch:bad tag"}, "image"),
        ({"env": {"1BAD": "x", "GOOD": "y"}}, "env"),
        ({"env": {"HAS-DASH": "x"}}, "env"),
        ({"gpu_count": 3}, "gpu_count"),
        ({"name": "Bad Name"}, "name"),
        ({"command": "python train.py"}, "command"),
    ]
    for fields, field in cases:
        with pytest.raises(ValidationError) as exc:
            submit(booking, renter, **fields)
        assert field in exc.value.message_dict, fields
    assert not Job.objects.exists()
    for image in ("ubuntu", "ghcr.io/org/trainer:v1.2", "localhost:5000/a/b@sha256:" + "a" * 64):
        assert submit(booking, renter, image=image, gpu_count=1).status == Job.Status.PENDING
        Job.objects.all().delete()


def test_gpus_of_live_jobs_cannot_exceed_the_booking(fleet, renter):
    booking = paid_booking(renter, fleet[0])
    submit(booking, renter, gpu_count=1)
    submit(booking, renter, gpu_count=1, name="second")
    with pytest.raises(ValidationError) as exc:
        submit(booking, renter, gpu_count=1, name="third")
    assert "already used" in str(exc.value.message_dict["gpu_count"])


def test_only_the_renter_of_a_paid_booking_can_submit(fleet, renter):
    booking = paid_booking(renter, fleet[0])
    with pytest.raises(PermissionDenied):
        submit(booking, make_renter())
    unpaid = bookings.booking_create(renter=renter, listing=fleet[1], gpu_count=1, start=next_hour(2), end=next_hour(3))
    with pytest.raises(ValidationError) as exc:
        submit(unpaid, renter)
    assert "Pending payment" in str(exc.value.message_dict["booking"])


def test_env_values_are_never_logged_or_returned(fleet, renter, api_as, caplog):
    booking = paid_booking(renter, fleet[0])
    caplog.set_level("DEBUG")
    response = api_as(renter).post(
        f"/api/v1/bookings/{booking.public_id}/jobs/",
        {"name": "train", "image": IMAGE, "env": {"HF_TOKEN": "hf_topsecret"}, "gpu_count": 2},
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["env"] == ["HF_TOKEN"]
    assert b"hf_topsecret" not in response.content
    job = Job.objects.get()
    assert "hf_topsecret" not in job.env_sealed and "hf_topsecret" not in caplog.text
    jobs.jobs_tick(now=booking.start)  # the launch passes the value to the cluster, and logs nothing of it
    assert "hf_topsecret" not in caplog.text
    assert SimJob.objects.get().spec["env_names"] == ["HF_TOKEN"]


def test_api_errors(fleet, renter, api_as):
    booking = paid_booking(renter, fleet[0])
    url = f"/api/v1/bookings/{booking.public_id}/jobs/"
    bad = api_as(renter).post(url, {"name": "x", "image": "Not An Image", "gpu_count": 9}, format="json")
    assert bad.status_code == 400 and {"image", "gpu_count"} <= set(field_errors(bad))
    other = api_as(make_renter()).post(url, {"name": "x", "image": IMAGE, "gpu_count": 1}, format="json")
    assert other.status_code == 404
    owner_only = api_as(make_owner()).post(url, {"name": "x", "image": IMAGE, "gpu_count": 1}, format="json")
    assert owner_only.status_code == 403
    assert not Job.objects.exists()


# --- Lifecycle, metering, failover ---------------------------------------------------------------------


def test_job_runs_at_the_start_is_metered_and_stopped_at_the_end(fleet, renter):
    booking = paid_booking(renter, fleet[0], hours=1)
    job = submit(booking, renter)
    t0 = booking.start
    assert jobs.jobs_tick(now=t0 - timedelta(minutes=1)).get("waiting") == 1
    assert jobs.jobs_tick(now=t0).get("launched") == 1
    job.refresh_from_db()
    assert job.status == Job.Status.PENDING and job.node_name == "gpu-a" and job.attempt == 1
    spec = SimJob.objects.get().spec
    assert spec["limits"] == {"nvidia.com/gpu": 2} and spec["activeDeadlineSeconds"] == 3600
    assert spec["labels"][LABEL_JOB] == str(job.public_id)
    jobs.jobs_tick(now=t0 + timedelta(seconds=10))
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.running_since == t0 + timedelta(seconds=5)
    assert job.gpu_seconds == 0  # reports come every SCHEDULER_METER_SECONDS
    jobs.jobs_tick(now=t0 + timedelta(minutes=30))
    job.refresh_from_db()
    assert job.gpu_seconds == 2 * (30 * 60 - 5)
    assert "step" in jobs.job_logs(job=job, now=t0 + timedelta(minutes=30))
    jobs.jobs_tick(now=booking.end)
    job.refresh_from_db()
    assert job.status == Job.Status.STOPPED and job.message == "The booking ended."
    assert job.gpu_seconds == 2 * (3600 - 5)
    assert not SimJob.objects.exists()  # deleted from the cluster
    done = bookings.booking_complete(booking=booking, now=booking.end + timedelta(minutes=5))
    assert done.delivered_gpu_seconds == job.gpu_seconds
    assert done.amount_paid == done.amount_earned + done.amount_refunded == Decimal("4.00")
    assert sum(s.gross_amount for s in Settlement.objects.filter(booking=done)) == done.amount_earned
    # 10 GPU-seconds were not delivered (the pod's start-up): refunded, to the cent, rounded down.
    assert done.amount_refunded == money.cents_down(Decimal("4.00") * 10 / 7200)


def test_a_finished_job_succeeds_and_later_time_stays_in_the_booking(fleet, renter):
    booking = paid_booking(renter, fleet[0], hours=1)
    job = submit(booking, renter, command=["sleep", "600"])
    jobs.jobs_tick(now=booking.start)
    jobs.jobs_tick(now=booking.start + timedelta(minutes=20))
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.message == "Completed (exit code 0)"
    assert job.gpu_seconds == 2 * 600 and job.finished_at == booking.start + timedelta(seconds=605)
    failing = submit(booking, renter, command=["sh", "-c", "exit 3"], name="broken")
    jobs.jobs_tick(now=booking.start + timedelta(minutes=21))
    jobs.jobs_tick(now=booking.start + timedelta(minutes=22))
    failing.refresh_from_db()
    assert failing.status == Job.Status.FAILED and failing.gpu_seconds == 2


def test_metering_replayed_makes_one_settlement(fleet, renter):
    booking = paid_booking(renter, fleet[0], hours=1)
    job = submit(booking, renter)
    jobs.jobs_tick(now=booking.start)
    jobs.jobs_tick(now=booking.start + timedelta(minutes=10))
    assert Settlement.objects.filter(booking=booking).count() == 1
    job.refresh_from_db()
    first = job.gpu_seconds
    # Replay the same report: the job forgets it was metered, the tick runs again at the same instant.
    Job.objects.filter(pk=job.pk).update(metered_until=None, gpu_seconds=0)
    jobs.jobs_tick(now=booking.start + timedelta(minutes=10))
    jobs.jobs_tick(now=booking.start + timedelta(minutes=10))
    assert Settlement.objects.filter(booking=booking).count() == 1
    assert UsageRecord.objects.filter(booking=booking).count() == 1
    booking.refresh_from_db()
    assert booking.delivered_gpu_seconds == first == 2 * (600 - 5)


def test_failover_moves_the_job_refunds_the_lost_time_and_meters_once(renter):
    owner_a, owner_b = make_owner(), make_owner()
    a = make_listing(owner_a, gpu_count=2, price="2.00", hostname="gpu-a")
    dearer = make_listing(owner_b, gpu_count=2, price="2.50", hostname="gpu-dear")
    other_model = make_listing(owner_b, gpu_count=2, price="1.00", hostname="gpu-v100", model="V100 16GB")
    b = make_listing(owner_b, gpu_count=2, price="1.80", hostname="gpu-b")
    sim_a = clusters.cluster_create_simulated(owner=owner_a.owner_membership.company, name="a")
    clusters.cluster_create_simulated(owner=owner_b.owner_membership.company, name="b")
    booking = paid_booking(renter, a, hours=4)  # 2 × 4 h × $2.00 = $16.00
    job = submit(booking, renter)
    t0 = booking.start
    jobs.jobs_tick(now=t0)
    jobs.jobs_tick(now=t0 + timedelta(hours=1))
    reliability = Listing.objects.get(pk=a.pk).reliability

    failed_at = t0 + timedelta(hours=1, minutes=1)
    clusters.simulated_node_set_ready(cluster=sim_a, node_name="gpu-a", ready=False, now=failed_at)
    noticed = failed_at + timedelta(minutes=10)  # the cluster reported it late
    assert jobs.jobs_tick(now=noticed).get("failover") == 1
    job.refresh_from_db()
    booking.refresh_from_db()
    # Same model, no dearer, ready: gpu-b (not the dearer H100, not the cheaper V100).
    assert booking.server_id == b.server_id and booking.listing_id == b.pk
    assert job.status == Job.Status.PENDING and job.attempt == 2 and job.node_name == "gpu-b"
    assert {dearer.server_id, other_model.server_id}.isdisjoint(
        BookingGpu.objects.filter(booking=booking).values_list("server_id", flat=True)
    )
    old = BookingGpu.objects.filter(booking=booking, server_id=a.server_id)
    assert set(old.values_list("end", flat=True)) == {noticed}
    assert Listing.objects.get(pk=a.pk).reliability < reliability
    # The lost 10 minutes (failure → re-booking) on 2 GPUs at $2.00, refunded at once, to the cent, rounded down.
    downtime = Refund.objects.get(booking=booking, reason=Refund.Reason.DOWNTIME)
    assert downtime.amount == money.cents_down(Decimal("2.00") * 2 * 600 / 3600) == Decimal("0.66")
    assert booking.lost_gpu_seconds == 2 * 600

    jobs.jobs_tick(now=noticed + timedelta(seconds=10))
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.running_since == noticed + timedelta(seconds=5)
    jobs.jobs_tick(now=booking.end)
    jobs.jobs_tick(now=booking.end)  # replayed: nothing more
    job.refresh_from_db()
    assert job.status == Job.Status.STOPPED
    done = bookings.booking_complete(booking=booking, now=booking.end + timedelta(minutes=5))

    first_run = 2 * (int((failed_at - t0).total_seconds()) - 5)
    second_run = 2 * (int((booking.end - noticed).total_seconds()) - 5)
    assert done.delivered_gpu_seconds == job.gpu_seconds == first_run + second_run
    by_server = {
        server: sum(s.gpu_seconds for s in Settlement.objects.filter(booking=done, server_id=server))
        for server in (a.server_id, b.server_id)
    }
    assert by_server == {a.server_id: first_run, b.server_id: second_run}
    assert UsageRecord.objects.filter(booking=done).count() == len(set(UsageRecord.objects.values_list("key")))
    assert done.amount_paid == done.amount_earned + done.amount_refunded == Decimal("16.00")
    assert sum(s.gross_amount for s in Settlement.objects.filter(booking=done)) == done.amount_earned


def test_no_equivalent_gpu_refunds_the_rest_and_ends_the_holds(fleet, renter):
    a, b, cluster = fleet
    paid_booking(make_renter(), b, hours=8)  # the only other H100 is taken
    booking = paid_booking(renter, a, hours=2)  # $8.00
    job = submit(booking, renter)
    jobs.jobs_tick(now=booking.start)
    jobs.jobs_tick(now=booking.start + timedelta(minutes=30))
    failed_at = booking.start + timedelta(minutes=30)
    clusters.simulated_node_set_ready(cluster=cluster, node_name="gpu-a", ready=False, now=failed_at)
    assert jobs.jobs_tick(now=failed_at + timedelta(seconds=30)).get("interrupted") == 1
    job.refresh_from_db()
    booking.refresh_from_db()
    assert job.status == Job.Status.INTERRUPTED and "refunded" in job.message
    assert set(BookingGpu.objects.filter(booking=booking).values_list("end", flat=True)) == {failed_at}
    assert booking.lost_gpu_seconds == 2 * 90 * 60
    refund = Refund.objects.get(booking=booking, reason=Refund.Reason.DOWNTIME)
    delivered = 2 * (30 * 60 - 5)
    earned = money.pro_rata(Decimal("8.00"), delivered, 2 * 2 * 3600)
    assert refund.amount == money.cents_down(
        money.pro_rata(Decimal("8.00") - earned, 2 * 90 * 60, 2 * 2 * 3600 - delivered)
    )
    done = bookings.booking_complete(booking=booking, now=booking.end + timedelta(minutes=5))
    assert done.amount_paid == done.amount_earned + done.amount_refunded


def test_renter_cancels_a_running_job(fleet, renter, client_as):
    booking = paid_booking(renter, fleet[0], hours=1)
    job = submit(booking, renter)
    jobs.jobs_tick(now=booking.start)
    with pytest.raises(PermissionDenied):
        jobs.job_cancel(job=job, renter=make_renter())
    stopped = jobs.job_cancel(job=job, renter=renter, now=booking.start + timedelta(minutes=2))
    assert stopped.status == Job.Status.STOPPED and stopped.message == "Cancelled by the renter."
    assert stopped.gpu_seconds == 2 * 115 and not SimJob.objects.exists()
    with pytest.raises(ValidationError):
        jobs.job_cancel(job=stopped, renter=renter)


def test_collector_deletes_every_job_that_should_not_exist(fleet, renter):
    a, _, cluster = fleet
    backend = SimulatedBackend(cluster)
    stray = JobSpec(
        name="infrafi-stray",
        namespace="infrafi-renter-0",
        node="gpu-a",
        image=IMAGE,
        command=[],
        args=[],
        env={},
        gpu_count=1,
        active_deadline_seconds=60,
        labels={LABEL_JOB: "00000000-0000-0000-0000-000000000000"},
    )
    backend.create_job(stray)
    booking = paid_booking(renter, a, hours=1)
    job = submit(booking, renter)
    jobs.jobs_tick(now=booking.start)
    job.refresh_from_db()
    assert {r.name for r in backend.list_jobs()} == {job.k8s_name}  # the stray went, ours stayed
    assert all(r.labels[LABEL_MANAGED_BY] == MANAGED_BY for r in backend.list_jobs())
    # A Job whose booking has ended never survives a collection.
    assert jobs.jobs_collect(now=booking.end + timedelta(seconds=1)) == 1
    assert backend.job_state(job.namespace, job.k8s_name).phase == Phase.GONE


def test_unconnected_server_waits_and_loses_nothing(owner, renter):
    listing = make_listing(owner, gpu_count=1, price="1.00")
    booking = paid_booking(renter, listing, hours=1, gpus=1)
    job = submit(booking, renter)
    assert jobs.jobs_tick(now=booking.start).get("no-node") == 1
    job.refresh_from_db()
    assert job.status == Job.Status.PENDING and "no ready node" in job.message
    jobs.jobs_tick(now=booking.end)
    job.refresh_from_db()
    assert job.status == Job.Status.STOPPED


# --- Quick book ------------------------------------------------------------------------------------------


def test_quick_book_best_fit_among_ready_servers(owner, renter):
    big = make_listing(owner, gpu_count=8, price="2.00", hostname="big")
    small = make_listing(owner, gpu_count=4, price="2.00", hostname="small")
    make_listing(owner, gpu_count=4, price="2.00", hostname="offline")  # no cluster node: never chosen
    company = owner.owner_membership.company
    clusters.cluster_create_simulated(owner=company, name="sim", servers=[big.server, small.server])
    booking = quickbook.quick_book(renter=renter, gpu_count=4, gpu_models=[big.gpu_model], hours=2)
    assert booking.listing_id == small.pk and booking.status == Booking.Status.PENDING_PAYMENT
    second = quickbook.quick_book(renter=renter, gpu_count=4, gpu_models=[big.gpu_model], hours=2)
    assert second.listing_id == big.pk
    with pytest.raises(ValidationError) as exc:
        quickbook.quick_book(renter=renter, gpu_count=8, gpu_models=[big.gpu_model], hours=2)
    assert "No server can run 8 GPU(s)" in str(exc.value.message_dict["gpu_count"])


def test_quick_book_favours_a_financed_server_that_needs_revenue(owner, operator, renter, loan):
    financed = loan.collateral.server.listing  # 8 × H100, $2.00, no revenue yet: its loan needs every rent
    twin = make_listing(owner, gpu_count=8, price="2.00", hostname="twin")  # the same shape, not financed
    company = owner.owner_membership.company
    clusters.cluster_create_simulated(owner=company, name="sim", servers=[twin.server, financed.server])
    booking = quickbook.quick_book(renter=renter, gpu_count=4, gpu_models=[twin.gpu_model], hours=2)
    assert booking.listing_id == financed.pk  # interchangeable for packing: the loan's server gets the rent


def test_quick_book_does_not_break_a_whole_server_for_a_loan(owner, operator, renter, loan):
    financed = loan.collateral.server.listing  # 8 × H100, financed
    small = make_listing(owner, gpu_count=4, price="2.00", hostname="small")
    company = owner.owner_membership.company
    clusters.cluster_create_simulated(owner=company, name="sim", servers=[financed.server, small.server])
    booking = quickbook.quick_book(renter=renter, gpu_count=4, gpu_models=[small.gpu_model], hours=2)
    # Half of the 8-GPU server would strand 4 GPUs an 8-GPU renter could not use: the exact fit wins.
    assert booking.listing_id == small.pk


# --- Pages ------------------------------------------------------------------------------------------------


def test_owner_pages(fleet, owner, client_as):
    client = client_as(owner)
    page = client.get("/owner/clusters/")
    assert page.status_code == 200 and b"Simulated cluster" in page.content
    bad = client.post("/owner/clusters/", {"k8s-name": "prod", "k8s-kubeconfig": "clusters: ["})
    assert bad.status_code == 400 and b"not valid YAML" in bad.content
    cluster = fleet[2]
    detail = client.get(f"/owner/clusters/{cluster.pk}/")
    assert b"gpu-a" in detail.content and b"Fail node" in detail.content
    client.post(f"/owner/clusters/{cluster.pk}/nodes/gpu-a/ready/", {"ready": "0"})
    assert not Node.objects.get(name="gpu-a").ready
    assert client_as(make_owner()).get(f"/owner/clusters/{cluster.pk}/").status_code == 404


def test_renter_job_pages(fleet, renter, client_as):
    booking = paid_booking(renter, fleet[0], hours=1)
    client = client_as(renter)
    bad = client.post(
        f"/bookings/{booking.public_id}/jobs/new/",
        {"name": "train", "image": "Bad Image", "command": "python train.py", "env": "1X=2", "gpu_count": 2},
    )
    assert bad.status_code == 400 and b"not a valid image reference" in bad.content
    assert b"Invalid variable name" in bad.content and not Job.objects.exists()
    ok = client.post(
        f"/bookings/{booking.public_id}/jobs/new/",
        {"name": "train", "image": IMAGE, "command": "python train.py --epochs 3", "env": "SEED=1", "gpu_count": 2},
    )
    job = Job.objects.get()
    assert ok.status_code == 302 and job.command == ["python", "train.py", "--epochs", "3"]
    page = client.get(f"/jobs/{job.public_id}/")
    assert page.status_code == 200 and b"Waiting for the booking" in page.content
    status = client.get(f"/jobs/{job.public_id}/status.json").json()
    assert status["status"] == "pending" and status["events"][0]["kind"] == "submitted"
    assert client_as(make_renter()).get(f"/jobs/{job.public_id}/").status_code == 404


def test_a_downtime_refund_is_reserved_once_per_failure(fleet, renter):
    booking = paid_booking(renter, fleet[0], hours=2)  # $8.00
    failed_at = booking.start + timedelta(minutes=30)
    first = bookings.booking_interrupt(
        booking=booking, failed_at=failed_at, resumed_at=failed_at + timedelta(minutes=15), key="server-1"
    )
    again = bookings.booking_interrupt(
        booking=booking, failed_at=failed_at, resumed_at=failed_at + timedelta(minutes=15), key="server-1"
    )
    booking.refresh_from_db()
    assert first.amount == Decimal("1.00") and first.status == Refund.Status.SUCCEEDED  # 2 GPUs × ¼ h × $2.00
    assert again is None and booking.refunds.count() == 1
    assert booking.amount_refunded == Decimal("1.00") and booking.lost_gpu_seconds == 2 * 900


@pytest.mark.parametrize("crash_in", ["booking_move", "booking_interrupt"])
def test_a_crash_during_failover_leaves_the_job_live_and_the_next_tick_fails_it_over_once(
    renter, monkeypatch, crash_in
):
    # given a job running on gpu-a, an equivalent free GPU on gpu-b, and gpu-a lost
    owner_a, owner_b = make_owner(), make_owner()
    a = make_listing(owner_a, gpu_count=2, price="2.00", hostname="gpu-a")
    b = make_listing(owner_b, gpu_count=2, price="1.80", hostname="gpu-b")
    sim_a = clusters.cluster_create_simulated(owner=owner_a.owner_membership.company, name="a")
    clusters.cluster_create_simulated(owner=owner_b.owner_membership.company, name="b")
    booking = paid_booking(renter, a, hours=4)
    job = submit(booking, renter)
    t0 = booking.start
    jobs.jobs_tick(now=t0)
    jobs.jobs_tick(now=t0 + timedelta(hours=1))
    failed_at = t0 + timedelta(hours=1, minutes=1)
    clusters.simulated_node_set_ready(cluster=sim_a, node_name="gpu-a", ready=False, now=failed_at)
    noticed = failed_at + timedelta(minutes=10)

    # when the worker dies at the named step of the failover (the process is gone: nothing after it runs)
    real = getattr(bookings, crash_in)

    def crash(**kwargs):
        if crash_in == "booking_interrupt":
            real(**kwargs)  # it did its work, then the process died before the failover finished
        raise RuntimeError("worker killed")

    monkeypatch.setattr(bookings, crash_in, crash)
    assert jobs.jobs_tick(now=noticed).get("error") == 1
    monkeypatch.setattr(bookings, crash_in, real)

    # then nothing of the failover stuck: the job is live, the booking still on gpu-a, nothing refunded
    job.refresh_from_db()
    booking.refresh_from_db()
    assert job.status in Job.LIVE and booking.server_id == a.server_id
    assert not Refund.objects.filter(booking=booking, reason=Refund.Reason.DOWNTIME).exists()
    assert not BookingGpu.objects.filter(booking=booking, server_id=b.server_id).exists()

    # and the next tick fails it over, once, refunding from when it failed (not from the retry)
    retried = noticed + timedelta(minutes=2)
    assert jobs.jobs_tick(now=retried).get("failover") == 1
    job.refresh_from_db()
    booking.refresh_from_db()
    assert booking.server_id == b.server_id and job.status == Job.Status.PENDING and job.node_name == "gpu-b"
    downtime = Refund.objects.get(booking=booking, reason=Refund.Reason.DOWNTIME)
    lost = int((retried - failed_at).total_seconds())
    assert downtime.amount == money.cents_down(Decimal("2.00") * 2 * lost / 3600)
    assert booking.lost_gpu_seconds == 2 * lost
    jobs.jobs_tick(now=retried + timedelta(seconds=10))
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING
    assert Refund.objects.filter(booking=booking, reason=Refund.Reason.DOWNTIME).count() == 1
