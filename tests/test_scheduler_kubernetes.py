"""The scheduler on a real Kubernetes client over HTTP, against the API
emulator (``tests.kube_emulator``): connecting a cluster checks the
kubeconfig against it; node sync; a job's life with the test as the kubelet;
an unreachable cluster loses no job record."""

from datetime import timedelta

import pytest
import yaml
from django.core.exceptions import ValidationError

from marketplace.models import Settlement
from marketplace.services import bookings
from scheduler.models import Cluster, Job, Node
from scheduler.services import clusters, jobs
from tests.factories import make_listing, next_hour

IMAGE = "ghcr.io/acme/trainer:1.4"


@pytest.fixture(autouse=True)
def _fast_kube(settings):
    settings.SCHEDULER_KUBE_TIMEOUT_SECONDS = 2
    settings.SCHEDULER_KUBE_RETRIES = 2
    # The emulator listens on 127.0.0.1: this deployment allows that host (production allows none).
    settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]


@pytest.fixture
def connected(owner, kube_cluster):
    listing = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-a")
    kube_cluster.add_node("gpu-a", gpus=2, product="NVIDIA-H100-80GB-HBM3")
    kube_cluster.add_node("gpu-z", gpus=4, product="NVIDIA-A100-SXM4-80GB", ready=False)
    cluster = clusters.cluster_connect(
        owner=owner.owner_membership.company, name="prod", kubeconfig=yaml.safe_dump(kube_cluster.kubeconfig)
    )
    return listing, cluster


def test_connect_checks_syncs_and_seals(connected, kube_cluster):
    listing, cluster = connected
    assert cluster.health == Cluster.Health.HEALTHY and cluster.api_server == kube_cluster.url
    assert "token" not in cluster.kubeconfig_sealed and kube_cluster.kubeconfig["users"][0]["name"] not in (
        cluster.kubeconfig_sealed
    )
    nodes = {n.name: n for n in Node.objects.filter(cluster=cluster)}
    assert nodes["gpu-a"].server_id == listing.server_id and nodes["gpu-a"].mismatch == ""
    assert nodes["gpu-a"].gpu_allocatable == 2 and nodes["gpu-a"].gpu_product == "NVIDIA-H100-80GB-HBM3"
    assert not nodes["gpu-z"].ready and nodes["gpu-z"].mismatch == "No server of yours has this hostname."


def test_connect_refuses_a_cluster_that_denies_jobs_or_cannot_be_reached(owner, kube_cluster):
    company = owner.owner_membership.company
    kube_cluster.deny("create", "batch", "jobs")
    with pytest.raises(ValidationError) as exc:
        clusters.cluster_connect(owner=company, name="prod", kubeconfig=yaml.safe_dump(kube_cluster.kubeconfig))
    assert "cannot create Jobs" in str(exc.value.message_dict["kubeconfig"])
    dead = kube_cluster.kubeconfig
    dead["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{kube_cluster.free_port()}"
    with pytest.raises(ValidationError) as exc:
        clusters.cluster_connect(owner=company, name="prod", kubeconfig=yaml.safe_dump(dead))
    assert "Could not reach the cluster" in str(exc.value.message_dict["kubeconfig"])
    assert not Cluster.objects.exists()


def test_a_job_on_kubernetes_from_start_to_success(connected, kube_cluster, renter):
    listing, _ = connected
    start = next_hour(1)
    booking = bookings.booking_create(
        renter=renter, listing=listing, gpu_count=2, start=start, end=start + timedelta(hours=2)
    )
    booking = bookings.booking_pay(booking=booking, renter=renter)
    job = jobs.job_submit(
        booking=booking,
        renter=renter,
        name="train",
        image=IMAGE,
        command=["python", "train.py"],
        env={"SEED": "7"},
        gpu_count=2,
        now=start - timedelta(minutes=1),
    )
    assert jobs.jobs_tick(now=start).get("launched") == 1
    job.refresh_from_db()
    stored = kube_cluster.stored("batch/v1/jobs", job.namespace, job.k8s_name)
    pod = stored["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "gpu-a"}
    # The whole server (2 of its 2 GPUs): all of its 64 cores and 256 GiB, half of that as /dev/shm.
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2", "cpu": "64000m", "memory": "262144Mi"}
    assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "131072Mi"}}]
    assert stored["spec"]["activeDeadlineSeconds"] == 7200 and stored["spec"]["backoffLimit"] == 0
    assert stored["metadata"]["labels"]["infrafi.io/job"] == str(job.public_id)
    assert stored["metadata"]["uid"] == job.k8s_uid

    kube_cluster.run_pod(job.namespace, job.k8s_name, started_at=start + timedelta(seconds=10))
    kube_cluster.write_log(job.namespace, job.k8s_name, "epoch 1 loss 0.42\n")
    jobs.jobs_tick(now=start + timedelta(minutes=20))
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING and job.gpu_seconds == 2 * (20 * 60 - 10)
    assert "epoch 1 loss 0.42" in jobs.job_logs(job=job)

    kube_cluster.finish_pod(job.namespace, job.k8s_name, exit_code=0, finished_at=start + timedelta(minutes=30))
    jobs.jobs_tick(now=start + timedelta(minutes=31))
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.gpu_seconds == 2 * (30 * 60 - 10)
    booking.refresh_from_db()
    assert booking.delivered_gpu_seconds == job.gpu_seconds
    assert Settlement.objects.filter(booking=booking).count() == 2


def test_an_unreachable_cluster_is_marked_and_loses_no_job(connected, kube_cluster, renter):
    listing, cluster = connected
    start = next_hour(1)
    booking = bookings.booking_pay(
        booking=bookings.booking_create(
            renter=renter, listing=listing, gpu_count=1, start=start, end=start + timedelta(hours=1)
        ),
        renter=renter,
    )
    job = jobs.job_submit(
        booking=booking, renter=renter, name="t", image=IMAGE, gpu_count=1, now=start - timedelta(minutes=1)
    )
    jobs.jobs_tick(now=start)
    job.refresh_from_db()
    name = job.k8s_name
    kube_cluster.run_pod(job.namespace, name, started_at=start + timedelta(seconds=5))
    fault = kube_cluster.fail(1000, 503)
    assert jobs.jobs_tick(now=start + timedelta(minutes=10)).get("unreachable") == 1
    cluster.refresh_from_db()
    job.refresh_from_db()
    assert cluster.health == Cluster.Health.UNHEALTHY and "503" in cluster.health_message
    assert job.status == Job.Status.PENDING and job.k8s_name == name and job.gpu_seconds == 0
    assert "unreachable" in job.message
    fault.left = 0  # the cluster is back
    clusters.cluster_sync(cluster=cluster)
    jobs.jobs_tick(now=start + timedelta(minutes=11))
    job.refresh_from_db()
    cluster.refresh_from_db()
    assert cluster.health == Cluster.Health.HEALTHY
    assert (job.status, job.message) == (
        Job.Status.RUNNING,
        "Running on gpu-a.",
    ) and job.gpu_seconds == 11 * 60 - 5  # nothing lost
