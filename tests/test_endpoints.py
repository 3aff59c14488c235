"""Inference endpoints (issue 15) over HTTP against the Kubernetes emulator, the test playing the
Deployment controller and kubelet (``kube_cluster.run_deployment`` / ``roll_deployment``): the
Deployment, Service and env Secret we create; readiness and metering of ready-replica seconds;
rolling a new image; the stop at the booking's end; bad input creating nothing on the cluster; an
unreachable cluster changing nothing; the page and the API; the simulated cluster of the demo."""

import base64
import uuid
from datetime import timedelta

import pytest
import yaml
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.services import api_token_issue
from marketplace.models import Booking, UsageRecord
from marketplace.services import bookings
from scheduler.models import Cluster, Endpoint, EndpointMinute
from scheduler.proxy.stats import bucket_of
from scheduler.services import clusters, endpoints, jobs
from tests.api_errors import field_errors
from tests.factories import make_listing, make_renter, next_hour

IMAGE = "ghcr.io/acme/llm-server:1.0"
IMAGE_2 = "ghcr.io/acme/llm-server:1.1"
DEPLOYMENTS = "apps/v1/deployments"


@pytest.fixture(autouse=True)
def _fast_kube(settings):
    settings.SCHEDULER_KUBE_TIMEOUT_SECONDS = 2
    settings.SCHEDULER_KUBE_RETRIES = 1
    settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]
    settings.SCHEDULER_METER_SECONDS = 300


@pytest.fixture
def connected(owner, kube_cluster):
    listing = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-a")
    kube_cluster.add_node("gpu-a", gpus=2)
    for image in (IMAGE, IMAGE_2):
        kube_cluster.set_image_user(image, 1000)
    cluster = clusters.cluster_connect(
        owner=owner.owner_membership.company, name="prod", kubeconfig=yaml.safe_dump(kube_cluster.kubeconfig)
    )
    return listing, cluster


def paid_booking(renter, listing, *, gpus=2, hours=2):
    start = next_hour(1)
    booking = bookings.booking_create(
        renter=renter, listing=listing, gpu_count=gpus, start=start, end=start + timedelta(hours=hours)
    )
    return bookings.booking_pay(booking=booking, renter=renter)


def create(booking, renter, **kwargs) -> Endpoint:
    fields = {
        "name": "llm",
        "image": IMAGE,
        "args": ["--port", "8000"],
        "env": {"HF_TOKEN": "hf_secret"},
        "port": 8000,
        "readiness_path": "/health",
        "replicas": 2,
        "gpus_per_replica": 1,
        "now": booking.start - timedelta(minutes=1),
    }
    fields.update(kwargs)
    return endpoints.endpoint_create(booking=booking, renter=renter, **fields)


def launched(connected, renter) -> tuple[Endpoint, object]:
    booking = paid_booking(renter, connected[0])
    endpoint = create(booking, renter)
    assert endpoints.endpoints_tick(now=booking.start).get("endpoints-launched") == 1
    endpoint.refresh_from_db()
    return endpoint, booking


def test_launch_creates_the_deployment_service_and_secret(connected, kube_cluster, renter):
    listing, cluster = connected
    booking = paid_booking(renter, listing)
    endpoint = create(booking, renter)
    assert endpoint.status == Endpoint.Status.PENDING and not endpoint.k8s_name
    assert not kube_cluster.requests("POST", f"/apis/apps/v1/namespaces/infrafi-renter-{renter.pk}/deployments")
    assert endpoints.endpoints_tick(now=booking.start - timedelta(seconds=1)).get("endpoints-waiting") == 1

    assert endpoints.endpoints_tick(now=booking.start).get("endpoints-launched") == 1
    endpoint.refresh_from_db()
    ns, name = endpoint.namespace, endpoint.k8s_name
    assert (ns, endpoint.cluster_id, endpoint.service_name) == (f"infrafi-renter-{renter.pk}", cluster.pk, name)
    deployment = kube_cluster.stored(DEPLOYMENTS, ns, name)
    assert deployment["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "infrafi",
        "infrafi.io/booking": str(booking.public_id),
        "infrafi.io/endpoint": str(endpoint.public_id),
    }
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert spec["selector"] == {"matchLabels": {"infrafi.io/endpoint": str(endpoint.public_id)}}
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Always" and pod["nodeSelector"] == {"kubernetes.io/hostname": "gpu-a"}
    container = pod["containers"][0]
    # One of the server's 2 GPUs per replica: half its 64 cores and 256 GiB, 90 % of that requested.
    assert container["resources"] == {
        "limits": {"nvidia.com/gpu": "1", "cpu": "32000m", "memory": "131072Mi"},
        "requests": {"nvidia.com/gpu": "1", "cpu": "28800m", "memory": "117964Mi"},
    }
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8000}
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    assert container["envFrom"] == [{"secretRef": {"name": f"{name}-env"}}]
    assert "env" not in container and "hf_secret" not in str(deployment)
    secret = kube_cluster.stored("v1/secrets", ns, f"{name}-env")
    assert base64.b64decode(secret["data"]["HF_TOKEN"]).decode() == "hf_secret"
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    service = kube_cluster.stored("v1/services", ns, name)
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == {"infrafi.io/endpoint": str(endpoint.public_id)}
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": 8000, "protocol": "TCP"}]


def test_readiness_sets_the_status_and_meters_ready_replica_seconds(connected, kube_cluster, renter):
    endpoint, booking = launched(connected, renter)
    ns, name, t0 = endpoint.namespace, endpoint.k8s_name, booking.start

    kube_cluster.run_deployment(ns, name, ready=1)
    assert len(kube_cluster.deployment_pods(ns, name)) == 2
    assert endpoints.endpoints_tick(now=t0 + timedelta(seconds=60)).get("endpoints-degraded") == 1
    endpoint.refresh_from_db()
    assert (endpoint.status, endpoint.ready_replicas) == (Endpoint.Status.DEGRADED, 1)
    assert endpoint.message == "1 of 2 replica(s) ready."
    # The readiness seen at this tick counts for the interval since the last: 1 replica × 1 GPU × 60 s.
    assert (endpoint.ready_replica_seconds, endpoint.unreported_gpu_seconds, endpoint.gpu_seconds) == (60, 60, 0)

    kube_cluster.run_deployment(ns, name, ready=2)
    assert endpoints.endpoints_tick(now=t0 + timedelta(seconds=100)).get("endpoints-ready") == 1
    endpoint.refresh_from_db()
    assert (endpoint.status, endpoint.ready_replicas, endpoint.running_image) == (Endpoint.Status.READY, 2, IMAGE)
    assert endpoint.ready_replica_seconds == 60 + 2 * 40
    assert not UsageRecord.objects.filter(booking=booking).exists()  # under SCHEDULER_METER_SECONDS so far

    endpoints.endpoints_tick(now=t0 + timedelta(seconds=400))
    endpoint.refresh_from_db()
    assert endpoint.ready_replica_seconds == 60 + 2 * 40 + 2 * 300 == 740
    assert (endpoint.gpu_seconds, endpoint.unreported_gpu_seconds) == (740, 0)
    usage = UsageRecord.objects.get(booking=booking)
    assert usage.gpu_seconds == 740 and (usage.interval_start, usage.interval_end) == (t0, t0 + timedelta(seconds=400))
    booking.refresh_from_db()
    assert booking.delivered_gpu_seconds == 740


def test_a_new_image_rolls_the_deployment(connected, kube_cluster, renter):
    endpoint, booking = launched(connected, renter)
    ns, name = endpoint.namespace, endpoint.k8s_name
    old_pods = set(kube_cluster.run_deployment(ns, name))
    endpoints.endpoints_tick(now=booking.start + timedelta(seconds=30))

    endpoint = endpoints.endpoint_update_image(endpoint=endpoint, renter=renter, image=IMAGE_2)
    template = kube_cluster.stored(DEPLOYMENTS, ns, name)["spec"]["template"]["spec"]
    assert template["containers"][0]["image"] == IMAGE_2
    # The rest of the container is as it was (the patch carried the whole container).
    assert template["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert template["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/health"

    # One pod replaced (maxUnavailable 1): the endpoint is rolling, one replica ready.
    kube_cluster.roll_deployment(ns, name, steps=1, ready=1)
    endpoints.endpoints_tick(now=booking.start + timedelta(seconds=60))
    endpoint.refresh_from_db()
    assert endpoint.status == Endpoint.Status.DEGRADED and endpoint.running_image == IMAGE
    assert endpoint.message.startswith(f"Rolling to {IMAGE_2}")

    new_pods = kube_cluster.roll_deployment(ns, name)
    assert not old_pods & set(new_pods) and len(new_pods) == 2
    images = {p["spec"]["containers"][0]["image"] for p in kube_cluster.deployment_pods(ns, name)}
    assert images == {IMAGE_2}
    endpoints.endpoints_tick(now=booking.start + timedelta(seconds=90))
    endpoint.refresh_from_db()
    assert (endpoint.status, endpoint.running_image, endpoint.image) == (Endpoint.Status.READY, IMAGE_2, IMAGE_2)


def test_the_booking_end_deletes_everything_and_meters_to_the_end(connected, kube_cluster, renter):
    endpoint, booking = launched(connected, renter)
    ns, name = endpoint.namespace, endpoint.k8s_name
    kube_cluster.run_deployment(ns, name, ready=2)
    endpoints.endpoints_tick(now=booking.start + timedelta(minutes=30))
    assert endpoints.endpoints_tick(now=booking.end + timedelta(minutes=5)).get("endpoints-stopped") == 1
    endpoint.refresh_from_db()
    assert (endpoint.status, endpoint.message) == (Endpoint.Status.STOPPED, "The booking ended.")
    assert endpoint.finished_at == booking.end
    for resource, object_name in ((DEPLOYMENTS, name), ("v1/services", name), ("v1/secrets", f"{name}-env")):
        assert kube_cluster.stored(resource, ns, object_name) is None, resource
    # Both replicas ready all along: 2 × 1 GPU × the whole 2-hour booking, and no more.
    assert endpoint.gpu_seconds == 2 * 2 * 3600 and endpoint.unreported_gpu_seconds == 0
    booking.refresh_from_db()
    assert booking.delivered_gpu_seconds == 2 * 2 * 3600
    assert max(UsageRecord.objects.filter(booking=booking).values_list("interval_end", flat=True)) == booking.end


def test_the_renter_stops_it_and_the_collector_removes_strays(connected, kube_cluster, renter):
    endpoint, booking = launched(connected, renter)
    kube_cluster.run_deployment(endpoint.namespace, endpoint.k8s_name, ready=2)
    endpoint = endpoints.endpoint_stop(endpoint=endpoint, renter=renter, now=booking.start + timedelta(seconds=50))
    assert endpoint.status == Endpoint.Status.STOPPED and endpoint.gpu_seconds == 2 * 50
    assert kube_cluster.stored(DEPLOYMENTS, endpoint.namespace, endpoint.k8s_name) is None
    # A Deployment of ours that no endpoint owns (e.g. left by a crash) is collected.
    kube_cluster.api(
        "POST",
        f"/apis/apps/v1/namespaces/{endpoint.namespace}/deployments",
        {
            "metadata": {
                "name": "ep-stray-000000",
                "labels": {"app.kubernetes.io/managed-by": "infrafi", "infrafi.io/endpoint": str(uuid.uuid4())},
            },
            "spec": {"replicas": 1, "selector": {"matchLabels": {}}, "template": {"spec": {"containers": []}}},
        },
    )
    assert endpoints.endpoints_tick(now=booking.start + timedelta(seconds=60)).get("endpoints-collected") == 1
    assert kube_cluster.stored(DEPLOYMENTS, endpoint.namespace, "ep-stray-000000") is None


def test_bad_input_is_refused_and_nothing_reaches_the_cluster(connected, kube_cluster, renter):
    listing, _ = connected
    booking = paid_booking(renter, listing)
    now = booking.start + timedelta(minutes=1)  # started: a valid endpoint would launch at once
    cases = [
        ({"image": "Not An Image!"}, "image"),
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"readiness_path": "health"}, "readiness_path"),
        ({"replicas": 3}, "replicas"),  # 3 × 1 GPU on a 2-GPU booking
        ({"env": {"1BAD": "x"}}, "env"),
    ]
    for change, field in cases:
        with pytest.raises(ValidationError) as exc:
            create(booking, renter, now=now, **change)
        assert field in exc.value.message_dict, change
    with pytest.raises(PermissionDenied):
        create(booking, make_renter(), now=now)
    # Jobs and endpoints share the booking's GPUs, both ways.
    jobs.job_submit(booking=booking, renter=renter, name="train", image=IMAGE, gpu_count=1, now=now)
    with pytest.raises(ValidationError) as exc:
        create(booking, renter, now=now, replicas=2)
    assert "1 not used by its jobs and endpoints" in exc.value.message_dict["replicas"][0]
    endpoint = create(booking, renter, now=now, replicas=1)
    assert endpoint.k8s_name
    with pytest.raises(ValidationError) as exc:
        jobs.job_submit(booking=booking, renter=renter, name="more", image=IMAGE, gpu_count=1, now=now)
    assert "gpu_count" in exc.value.message_dict
    assert Endpoint.objects.count() == 1
    assert len(kube_cluster.requests("POST", f"/apis/apps/v1/namespaces/{endpoint.namespace}/deployments")) == 1
    with pytest.raises(ValidationError) as exc:
        endpoints.endpoint_update_image(endpoint=endpoint, renter=renter, image="UPPER/Case")
    assert "image" in exc.value.message_dict
    with pytest.raises(PermissionDenied):
        endpoints.endpoint_stop(endpoint=endpoint, renter=make_renter())
    assert not kube_cluster.requests(
        "PATCH", f"/apis/apps/v1/namespaces/{endpoint.namespace}/deployments/{endpoint.k8s_name}"
    )


def test_an_unreachable_cluster_leaves_the_endpoint_as_it_was(connected, kube_cluster, renter):
    endpoint, booking = launched(connected, renter)
    kube_cluster.run_deployment(endpoint.namespace, endpoint.k8s_name, ready=2)
    endpoints.endpoints_tick(now=booking.start + timedelta(seconds=30))
    before = Endpoint.objects.filter(pk=endpoint.pk).values().get()
    fault = kube_cluster.fail(1000, 503)
    counts = endpoints.endpoints_tick(now=booking.start + timedelta(seconds=90))
    assert counts.get("endpoints-unreachable") == 1
    assert Endpoint.objects.filter(pk=endpoint.pk).values().get() == before
    cluster = Cluster.objects.get(pk=endpoint.cluster_id)
    assert cluster.health == Cluster.Health.UNHEALTHY
    # Also at the booking's end: the stop waits for the cluster, and then meters to the end.
    assert endpoints.endpoints_tick(now=booking.end + timedelta(minutes=1)).get("endpoints-unreachable") == 1
    assert Endpoint.objects.get(pk=endpoint.pk).status == Endpoint.Status.READY
    fault.left = 0
    assert endpoints.endpoints_tick(now=booking.end + timedelta(minutes=2)).get("endpoints-stopped") == 1
    endpoint.refresh_from_db()
    assert endpoint.status == Endpoint.Status.STOPPED and endpoint.gpu_seconds == 2 * 2 * 3600


def test_the_page_shows_status_url_examples_and_stats(connected, kube_cluster, renter, client_as):
    endpoint, booking = launched(connected, renter)
    now_minute = timezone.now().replace(second=0, microsecond=0)
    histogram = [0] * 28
    histogram[bucket_of(4)] = 90  # 90 requests ≤ 5 ms
    histogram[bucket_of(180)] = 10  # 10 requests in (150, 200] ms
    EndpointMinute.objects.create(
        endpoint=endpoint, minute=now_minute, requests=100, errors=3, latency_buckets=histogram
    )
    EndpointMinute.objects.create(  # older than the last hour: not counted
        endpoint=endpoint, minute=now_minute - timedelta(hours=2), requests=999, errors=999, latency_buckets=[999]
    )
    page = client_as(renter).get(f"/inference/{endpoint.public_id}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert f"http://testserver/endpoints/{endpoint.public_id}/" in html
    assert 'id="stat-requests">100<' in html and 'id="stat-errors">3<' in html
    assert 'id="stat-p50">≤ 5 ms<' in html and 'id="stat-p95">≤ 200 ms<' in html
    assert "Authorization: Bearer &lt;your token&gt;" in html
    assert f'base_url="http://testserver/endpoints/{endpoint.public_id}/v1"' in html
    assert client_as(make_renter()).get(f"/inference/{endpoint.public_id}/").status_code == 404
    listed = client_as(renter).get("/inference/").content.decode()
    assert f'href="/inference/{endpoint.public_id}/"' in listed
    assert f"/bookings/{booking.public_id}/endpoints/new/" in client_as(renter).get("/bookings/").content.decode()

    # The form, prefilled from the vLLM template.
    form = client_as(renter).get(f"/bookings/{booking.public_id}/endpoints/new/?template=vllm")
    assert form.status_code == 200 and "vllm/vllm-openai:v0.6.3" in form.content.decode()
    bad = client_as(renter).post(
        f"/bookings/{booking.public_id}/endpoints/new/",
        {
            "name": "x",
            "image": "Bad Image",
            "port": 8000,
            "readiness_path": "/health",
            "replicas": 1,
            "gpus_per_replica": 1,
        },
    )
    assert bad.status_code == 400 and "is not a valid image reference" in bad.content.decode()

    # Change the image and stop from the page.
    client_as(renter).post(f"/inference/{endpoint.public_id}/image/", {"image": IMAGE_2})
    assert (
        kube_cluster.stored(DEPLOYMENTS, endpoint.namespace, endpoint.k8s_name)["spec"]["template"]["spec"][
            "containers"
        ][0]["image"]
        == IMAGE_2
    )
    client_as(renter).post(f"/inference/{endpoint.public_id}/stop/")
    assert Endpoint.objects.get(pk=endpoint.pk).status == Endpoint.Status.STOPPED


def test_the_api_creates_reads_rolls_and_stops(connected, kube_cluster, renter, api_as):
    listing, _ = connected
    booking = paid_booking(renter, listing)
    token = api_token_issue(user=renter, name="ci", scope="book").key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    url = f"/api/v1/bookings/{booking.public_id}/endpoints/"
    bad = client.post(url, {"name": "llm", "image": "Bad Image", "port": 0, "replicas": 5}, format="json")
    assert bad.status_code == 400 and {"image", "port", "replicas"} <= set(field_errors(bad))
    other = api_as(make_renter()).post(url, {"name": "llm", "image": IMAGE}, format="json")
    assert other.status_code == 404
    read_only = APIClient()
    read_only.credentials(HTTP_AUTHORIZATION=f"Token {api_token_issue(user=renter, name='ro', scope='read').key}")
    assert read_only.post(url, {"name": "llm", "image": IMAGE}, format="json").status_code == 403
    assert not Endpoint.objects.exists()
    assert not [r for r in kube_cluster.requests("POST") if "deployments" in r or "services" in r]

    created = client.post(url, {"name": "llm", "image": IMAGE, "replicas": 1, "gpus_per_replica": 2}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["status"] == "pending" and body["url"] == f"http://testserver/endpoints/{body['id']}/"
    assert body["stats"] == {"requests": 0, "errors": 0, "p50_ms": None, "p95_ms": None}
    detail = f"/api/v1/endpoints/{body['id']}/"
    assert api_as(make_renter()).get(detail).status_code == 404
    endpoints.endpoints_tick(now=booking.start)
    endpoint = Endpoint.objects.get()
    kube_cluster.run_deployment(endpoint.namespace, endpoint.k8s_name)
    endpoints.endpoints_tick(now=booking.start + timedelta(seconds=20))
    got = client.get(detail).json()
    assert (got["status"], got["ready_replicas"], got["ready_replica_seconds"]) == ("ready", 1, 20)
    assert client.patch(detail, {"image": "bad image"}, format="json").status_code == 400
    rolled = client.patch(detail, {"image": IMAGE_2}, format="json")
    assert rolled.status_code == 200 and rolled.json()["image"] == IMAGE_2
    stopped = client.delete(detail)
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopped"
    assert client.delete(detail).status_code == 400


def test_the_simulated_cluster_runs_an_endpoint(owner, renter, settings):
    settings.SCHEDULER_SIM_START_SECONDS = 5
    listing = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-a")
    clusters.cluster_create_simulated(owner=owner.owner_membership.company, name="sim")
    booking = paid_booking(renter, listing)
    endpoint = create(booking, renter, now=booking.start)
    assert endpoint.status == Endpoint.Status.PENDING and endpoint.k8s_name
    endpoints.endpoints_tick(now=booking.start + timedelta(seconds=10))
    endpoint.refresh_from_db()
    assert (endpoint.status, endpoint.ready_replicas, endpoint.ready_replica_seconds) == ("ready", 2, 20)
    endpoints.endpoint_update_image(
        endpoint=endpoint, renter=renter, image=IMAGE_2, now=booking.start + timedelta(seconds=10)
    )
    endpoints.endpoints_tick(now=booking.start + timedelta(seconds=12))
    endpoint.refresh_from_db()
    assert (endpoint.status, endpoint.ready_replicas) == ("degraded", 1)
    endpoints.endpoints_tick(now=booking.start + timedelta(seconds=20))
    endpoint.refresh_from_db()
    assert (endpoint.status, endpoint.running_image) == ("ready", IMAGE_2)
    endpoints.endpoints_tick(now=booking.end)
    endpoint.refresh_from_db()
    assert endpoint.status == "stopped" and not endpoint.cluster.sim_deployments.exists()


def test_the_cluster_tick_runs_the_endpoints_from_its_snapshot(connected, kube_cluster, renter):
    """Production's path: ``jobs_tick`` → each cluster's tick → ``CLUSTER_STEPS`` (ours) on its snapshot."""
    listing, _ = connected
    booking = paid_booking(renter, listing)
    endpoint = create(booking, renter)
    jobs.jobs_tick(now=booking.start)
    endpoint.refresh_from_db()
    assert endpoint.k8s_name and kube_cluster.stored(DEPLOYMENTS, endpoint.namespace, endpoint.k8s_name)
    kube_cluster.run_deployment(endpoint.namespace, endpoint.k8s_name, ready=2)
    reads = len(
        kube_cluster.requests("GET", f"/apis/apps/v1/namespaces/{endpoint.namespace}/deployments/{endpoint.k8s_name}")
    )
    counts = jobs.jobs_tick(now=booking.start + timedelta(seconds=30))
    assert counts.get("endpoints-ready") == 1
    # Read from the snapshot's one list of Deployments, not one by one.
    assert (
        len(
            kube_cluster.requests(
                "GET", f"/apis/apps/v1/namespaces/{endpoint.namespace}/deployments/{endpoint.k8s_name}"
            )
        )
        == reads
    )
    endpoint.refresh_from_db()
    assert (endpoint.status, endpoint.ready_replica_seconds) == (Endpoint.Status.READY, 60)
    jobs.jobs_tick(now=booking.end)
    endpoint.refresh_from_db()
    assert endpoint.status == Endpoint.Status.STOPPED
    assert kube_cluster.stored(DEPLOYMENTS, endpoint.namespace, endpoint.k8s_name) is None


def test_a_booking_moved_by_failover_takes_its_endpoint_along(owner, renter, settings):
    settings.SCHEDULER_SIM_START_SECONDS = 5
    a = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-a")
    b = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-b")
    cluster = clusters.cluster_create_simulated(owner=owner.owner_membership.company, name="sim")
    booking = paid_booking(renter, a)
    endpoint = create(booking, renter, now=booking.start)
    endpoints.endpoints_tick(now=booking.start + timedelta(seconds=10))
    assert cluster.sim_deployments.get().node == "gpu-a"
    # Given: a job's failover moved the booking to server b (as ``booking_move`` does).
    Booking.objects.filter(pk=booking.pk).update(server=b.server, listing=b)
    assert endpoints.endpoints_tick(now=booking.start + timedelta(seconds=20)).get("endpoints-moved") == 1
    endpoint.refresh_from_db()
    assert not cluster.sim_deployments.exists() and endpoint.status == Endpoint.Status.PENDING
    assert endpoint.ready_replica_seconds == 2 * 20  # ready on gpu-a until the move was seen
    endpoints.endpoints_tick(now=booking.start + timedelta(seconds=30))
    endpoint.refresh_from_db()
    assert cluster.sim_deployments.get().node == "gpu-b" and endpoint.server_id == b.server_id
    endpoints.endpoints_tick(now=booking.start + timedelta(seconds=40))
    endpoint.refresh_from_db()
    # Not ready on gpu-b until 5 s after its creation at +30: the +30..+40 interval counts both replicas.
    assert endpoint.status == Endpoint.Status.READY and endpoint.ready_replica_seconds == 2 * 20 + 2 * 10


def test_a_replica_that_cannot_run_says_why(connected, kube_cluster, renter):
    listing, _ = connected
    # Something else holds one of the node's 2 GPUs: only one replica fits.
    kube_cluster.api("POST", "/api/v1/namespaces", {"metadata": {"name": "other"}})
    other = {
        "metadata": {"name": "squatter", "namespace": "other"},
        "spec": {
            "nodeName": "gpu-a",
            "containers": [{"name": "x", "image": "x", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
        "status": {"phase": "Running"},
    }
    kube_cluster.api("POST", "/api/v1/namespaces/other/pods", other)
    booking = paid_booking(renter, listing)
    endpoint = create(booking, renter, now=booking.start)
    ns, name = endpoint.namespace, endpoint.k8s_name
    kube_cluster.run_deployment(ns, name)
    bound = [p for p in kube_cluster.deployment_pods(ns, name) if p["spec"].get("nodeName")]
    assert len(bound) == 1
    endpoints.endpoints_tick(now=booking.start + timedelta(seconds=30))
    endpoint.refresh_from_db()
    assert (endpoint.status, endpoint.ready_replicas) == (Endpoint.Status.DEGRADED, 1)
    assert endpoint.message == (
        "1 of 2 replica(s) ready. Unschedulable: 0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    )

    # An image whose user is root starts all the same: the pod runs it as SCHEDULER_RUN_AS_USER (the
    # kubelet's runAsNonRoot check passes on runAsUser 1000), as a job's pod does.
    endpoints.endpoint_update_image(endpoint=endpoint, renter=renter, image="ghcr.io/acme/root-server:2")
    kube_cluster.roll_deployment(ns, name)
    started = [
        p
        for p in kube_cluster.deployment_pods(ns, name)
        if p["spec"]["containers"][0]["image"] == "ghcr.io/acme/root-server:2" and p["spec"].get("nodeName")
    ]
    assert started and "running" in started[0]["status"]["containerStatuses"][0]["state"]
    assert started[0]["spec"]["securityContext"]["runAsUser"] == 1000
    endpoints.endpoints_tick(now=booking.start + timedelta(seconds=60))
    endpoint.refresh_from_db()
    # One replica ready on the new image; the other cannot be placed while the GPU is taken.
    assert (endpoint.status, endpoint.ready_replicas) == ("degraded", 1)
    assert "Insufficient nvidia.com/gpu" in endpoint.message


def test_an_endpoint_never_launched_stops_at_the_booking_end_even_with_its_cluster_down(
    connected, kube_cluster, renter
):
    listing, cluster = connected
    booking = paid_booking(renter, listing)
    endpoint = create(booking, renter)
    Cluster.objects.filter(pk=cluster.pk).update(health=Cluster.Health.UNHEALTHY)  # no ready node to launch on
    kube_cluster.fail(1000, 503)
    assert jobs.jobs_tick(now=booking.start + timedelta(minutes=1)).get("endpoints-launched") is None
    endpoint.refresh_from_db()
    assert endpoint.status == Endpoint.Status.PENDING and not endpoint.k8s_name
    jobs.jobs_tick(now=booking.end)
    endpoint.refresh_from_db()
    assert (endpoint.status, endpoint.message, endpoint.gpu_seconds) == ("stopped", "The booking ended.", 0)
    assert not kube_cluster.requests("POST", f"/apis/apps/v1/namespaces/infrafi-renter-{renter.pk}/deployments")
