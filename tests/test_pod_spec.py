"""A pod spec real clusters accept, over HTTP against the Kubernetes emulator
(``tests.kube_emulator``) whose test kubelet enforces what a real one does:
``runAsNonRoot`` against the image's user, and requests within the node's
allocatable. Root images start with and without user namespaces; CPU, memory
and /dev/shm come from the job's share of its server; environment values live
in a Secret that goes with the Job; a pod over allocatable stays Pending and
the renter sees why."""

import base64
import json
from datetime import timedelta

import pytest
import yaml
from django.urls import reverse

from marketplace.services import bookings
from scheduler.backends.base import Phase
from scheduler.backends.kubernetes import KubernetesBackend
from scheduler.models import Job
from scheduler.services import clusters, jobs
from tests.factories import make_listing, next_hour

PYTORCH = "nvcr.io/nvidia/pytorch:24.05-py3"  # its user is root, as the emulator's images are by default
SECRET_VALUE = "hf_0123456789abcdef"


@pytest.fixture(autouse=True)
def _fast_kube(settings):
    settings.SCHEDULER_KUBE_TIMEOUT_SECONDS = 2
    settings.SCHEDULER_KUBE_RETRIES = 2
    settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]


def _launched(owner, renter, kube_cluster, *, version: str = "v1.29.4", node_cpu: str = "64", gpus: int = 1):
    """A cluster of that version with the booked server's node; a paid booking of ``gpus`` of its 2 GPUs
    and a job on them (pytorch, one secret variable), launched at the booking's start."""
    kube_cluster.set_server_version(version)
    listing = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-a")
    kube_cluster.add_node("gpu-a", gpus=2, cpu=node_cpu)
    cluster = clusters.cluster_connect(
        owner=owner.owner_membership.company, name="prod", kubeconfig=yaml.safe_dump(kube_cluster.kubeconfig)
    )
    start = next_hour(1)
    booking = bookings.booking_pay(
        booking=bookings.booking_create(
            renter=renter, listing=listing, gpu_count=gpus, start=start, end=start + timedelta(hours=1)
        ),
        renter=renter,
    )
    job = jobs.job_submit(
        booking=booking,
        renter=renter,
        name="train",
        image=PYTORCH,
        command=["python", "train.py"],
        env={"HF_TOKEN": SECRET_VALUE},
        gpu_count=gpus,
        now=start - timedelta(minutes=1),
    )
    assert jobs.jobs_tick(now=start).get("launched") == 1
    job.refresh_from_db()
    return cluster, job, start


def test_the_test_kubelet_refuses_a_root_image_under_run_as_non_root(kube_cluster, kube_backend):
    # Given the Job we used to create (runAsNonRoot, no runAsUser) for a root image, and for an image
    # whose user is 1000, and one asking for user 0 outright.
    kube_cluster.add_node("gpu-a", gpus=8)
    kube_backend.ensure_namespace("ns")

    def post(name: str, image: str, context: dict) -> None:
        container = {"name": "main", "image": image, "securityContext": context}
        pod = {"nodeSelector": {"kubernetes.io/hostname": "gpu-a"}, "containers": [container]}
        pod["securityContext"] = {"runAsNonRoot": True}
        job = {
            "metadata": {"name": name, "namespace": "ns", "labels": {"app.kubernetes.io/managed-by": "infrafi"}},
            "spec": {"template": {"spec": pod}},
        }
        kube_cluster.api("POST", "/apis/batch/v1/namespaces/ns/jobs", job)
        kube_cluster.run_pod("ns", name)

    kube_cluster.set_image_user("ghcr.io/acme/nonroot:1", 1000)
    post("old-spec", PYTORCH, {"runAsNonRoot": True})
    post("nonroot", "ghcr.io/acme/nonroot:1", {"runAsNonRoot": True})
    post("uid-zero", "ghcr.io/acme/nonroot:1", {"runAsUser": 0})

    # Then the root image is refused, with the kubelet's reason for the renter; the other runs.
    refused = kube_backend.job_state("ns", "old-spec")
    assert refused.phase is Phase.PENDING
    assert refused.message.startswith(
        "CreateContainerConfigError: container has runAsNonRoot and image will run as root"
    )
    assert kube_backend.job_state("ns", "nonroot").phase is Phase.RUNNING
    zero = kube_backend.job_state("ns", "uid-zero")
    assert zero.phase is Phase.PENDING and "container's runAsUser breaks non-root policy" in zero.message


def test_a_root_image_starts_without_user_namespaces_as_the_configured_user(owner, renter, kube_cluster, settings):
    settings.SCHEDULER_RUN_AS_USER = 4242
    cluster, job, start = _launched(owner, renter, kube_cluster, version="v1.29.4")

    assert cluster.server_version == "v1.29.4"
    pod = kube_cluster.stored("batch/v1/jobs", job.namespace, job.k8s_name)["spec"]["template"]["spec"]
    assert "hostUsers" not in pod
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 4242,
        "runAsGroup": 4242,
        "fsGroup": 4242,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    namespace = kube_cluster.stored("v1/namespaces", None, job.namespace)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

    kube_cluster.run_pod(job.namespace, job.k8s_name, started_at=start + timedelta(seconds=5))
    jobs.jobs_tick(now=start + timedelta(minutes=1))
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING


def test_a_root_image_starts_in_a_user_namespace_where_the_cluster_has_them(owner, renter, kube_cluster, client_as):
    cluster, job, start = _launched(owner, renter, kube_cluster, version="v1.33.1")

    assert cluster.server_version == "v1.33.1"
    pod = kube_cluster.stored("batch/v1/jobs", job.namespace, job.k8s_name)["spec"]["template"]["spec"]
    assert pod["hostUsers"] is False
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert pod["containers"][0]["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    namespace = kube_cluster.stored("v1/namespaces", None, job.namespace)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"

    kube_cluster.run_pod(job.namespace, job.k8s_name, started_at=start + timedelta(seconds=5))
    jobs.jobs_tick(now=start + timedelta(minutes=1))
    job.refresh_from_db()
    assert job.status == Job.Status.RUNNING

    page = client_as(owner).get(reverse("scheduler:owner_cluster", args=[cluster.pk]))
    assert page.status_code == 200
    assert '<span id="server-version">Kubernetes v1.33.1</span>' in page.content.decode()


def test_cpu_memory_and_shm_are_the_jobs_share_of_its_server(owner, renter, kube_cluster):
    # The server declares 64 cores and 256 GiB over 2 GPUs; the job has 1 of them.
    _, job, _ = _launched(owner, renter, kube_cluster, gpus=1)

    pod = kube_cluster.stored("batch/v1/jobs", job.namespace, job.k8s_name)["spec"]["template"]["spec"]
    [container] = pod["containers"]
    share = {"nvidia.com/gpu": "1", "cpu": "32000m", "memory": "131072Mi"}
    # requested at 90 %: the node's system reservations must not make a whole-server booking unschedulable
    asked = {"nvidia.com/gpu": "1", "cpu": "28800m", "memory": "117964Mi"}
    assert container["resources"] == {"limits": share, "requests": asked}
    assert pod["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "65536Mi"}}]
    assert container["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]


def test_env_is_in_a_secret_owned_by_the_job_and_deleted_with_it(owner, renter, kube_cluster):
    _, job, start = _launched(owner, renter, kube_cluster)

    stored = kube_cluster.stored("batch/v1/jobs", job.namespace, job.k8s_name)
    assert SECRET_VALUE not in json.dumps(stored)
    [container] = stored["spec"]["template"]["spec"]["containers"]
    assert "env" not in container
    assert container["envFrom"] == [{"secretRef": {"name": f"{job.k8s_name}-env"}}]
    secret = kube_cluster.stored("v1/secrets", job.namespace, f"{job.k8s_name}-env")
    assert {key: base64.b64decode(value).decode() for key, value in secret["data"].items()} == {
        "HF_TOKEN": SECRET_VALUE
    }
    [owner_ref] = secret["metadata"]["ownerReferences"]
    assert (owner_ref["kind"], owner_ref["name"], owner_ref["uid"]) == ("Job", job.k8s_name, job.k8s_uid)

    jobs.job_cancel(job=job, renter=renter, now=start + timedelta(minutes=2))

    job.refresh_from_db()
    assert job.status == Job.Status.STOPPED
    assert kube_cluster.stored("batch/v1/jobs", job.namespace, job.k8s_name) is None
    assert kube_cluster.stored("v1/secrets", job.namespace, f"{job.k8s_name}-env") is None


def test_a_request_over_allocatable_stays_pending_and_the_renter_sees_why(owner, renter, kube_cluster, client_as):
    # The job's share of the server (both GPUs) is 64 cores; then the node's allocatable drops to 16
    # (after the sync that capped the share at the node's allocatable, e.g. more kube-reserved).
    _, job, start = _launched(owner, renter, kube_cluster, node_cpu="64", gpus=2)
    node = kube_cluster.api("GET", "/api/v1/nodes/gpu-a")
    allocatable = {**node["status"]["allocatable"], "cpu": "16"}
    kube_cluster.api("PATCH", "/api/v1/nodes/gpu-a/status", {"status": {"allocatable": allocatable}})

    kube_cluster.run_pod(job.namespace, job.k8s_name, started_at=start + timedelta(seconds=5))
    jobs.jobs_tick(now=start + timedelta(minutes=1))

    job.refresh_from_db()
    assert job.status == Job.Status.PENDING and job.gpu_seconds == 0
    reason = "Waiting for the pod: Unschedulable: 0/1 nodes are available: 1 Insufficient cpu."
    assert job.message == reason
    [pod] = kube_cluster.pods(job.namespace, job.k8s_name)
    assert "nodeName" not in pod["spec"]
    page = client_as(renter).get(reverse("scheduler:job_detail", args=[job.public_id]))
    assert page.status_code == 200 and reason in page.content.decode()


def test_a_namespace_made_before_the_upgrade_follows_the_clusters_level(kube_cluster):
    old = KubernetesBackend(kube_cluster.kubeconfig, private_network_allowed=True, server_version="v1.29.4")
    new = KubernetesBackend(kube_cluster.kubeconfig, private_network_allowed=True, server_version="v1.33.0")

    old.ensure_namespace("ns")
    new.ensure_namespace("ns")

    labels = kube_cluster.stored("v1/namespaces", None, "ns")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    old.close()
    new.close()


def test_a_whole_server_booking_fits_a_node_that_keeps_some_cpu_for_the_system(owner, renter, kube_cluster):
    # The node reserves 2 of the server's 64 declared cores for the system (allocatable 62); the job books both GPUs.
    _, job, start = _launched(owner, renter, kube_cluster, node_cpu="62", gpus=2)

    kube_cluster.run_pod(job.namespace, job.k8s_name, started_at=start + timedelta(seconds=5))
    jobs.jobs_tick(now=start + timedelta(minutes=1))

    job.refresh_from_db()
    [pod] = kube_cluster.pods(job.namespace, job.k8s_name)
    assert pod["spec"]["nodeName"] == "gpu-a" and job.status == Job.Status.RUNNING
