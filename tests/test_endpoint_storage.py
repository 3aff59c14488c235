"""Inference endpoints with a private image and the renter's volume, over HTTP against the
Kubernetes emulator (the test playing the Deployment controller: ``kube_cluster.run_deployment``).

As for jobs (tests/test_storage.py): the renter's registry credential, named or picked for the
image's registry, becomes the ``kubernetes.io/dockerconfigjson`` Secret ``<deployment>-pull``,
created before the Deployment, owned by it, named in the pod template's ``imagePullSecrets`` and
deleted at stop; the renter's volume on the booked server is a PVC on the owner's storage class,
mounted at ``/workspace`` in every replica, that survives the endpoint. A credential for another
registry, another renter's credential or volume, or a volume on another server, is a 400 and
nothing is POSTed to the cluster; rolling to another registry's image is refused."""

import base64
import json
from datetime import timedelta

import pytest
import yaml
from django.core.exceptions import ValidationError

from marketplace.models import Booking
from marketplace.services import bookings
from scheduler.models import Endpoint, Volume
from scheduler.services import clusters, endpoints, storage
from tests.api_errors import field_errors
from tests.factories import make_listing, make_renter, next_hour

IMAGE = "ghcr.io/acme/llm-server:1.0"
IMAGE_2 = "ghcr.io/acme/llm-server:1.1"
DEPLOYMENTS = "apps/v1/deployments"
PVCS = "v1/persistentvolumeclaims"
SECRETS = "v1/secrets"


@pytest.fixture(autouse=True)
def _fast_kube(settings):
    settings.SCHEDULER_KUBE_TIMEOUT_SECONDS = 2
    settings.SCHEDULER_KUBE_RETRIES = 1
    settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]


@pytest.fixture
def connected(owner, kube_cluster):
    """Two servers (gpu-a, gpu-b) on one cluster whose owner offers volumes on ``fast-ssd``."""
    listing = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-a")
    other = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-b")
    kube_cluster.add_node("gpu-a", gpus=2)
    kube_cluster.add_node("gpu-b", gpus=2)
    for image in (IMAGE, IMAGE_2):
        kube_cluster.set_image_user(image, 1000)
    company = owner.owner_membership.company
    cluster = clusters.cluster_connect(owner=company, name="prod", kubeconfig=yaml.safe_dump(kube_cluster.kubeconfig))
    storage.cluster_set_storage(cluster=cluster, owner=company, storage_class="fast-ssd", max_volume_gib=100)
    return listing, other, cluster


def _booking(renter, listing, *, hours=2, start_in=1):
    start = next_hour(start_in)
    booking = bookings.booking_create(
        renter=renter, listing=listing, gpu_count=2, start=start, end=start + timedelta(hours=hours)
    )
    return bookings.booking_pay(booking=booking, renter=renter)


def _create(booking, renter, **kwargs) -> Endpoint:
    fields = {"name": "llm", "image": IMAGE, "replicas": 2, "gpus_per_replica": 1, "now": booking.start}
    fields.update(kwargs)
    return endpoints.endpoint_create(booking=booking, renter=renter, **fields)


def _ghcr(renter, name="ghcr-acme"):
    return storage.registry_credential_create(
        renter=renter, name=name, registry="ghcr.io", username="acme-bot", password="ghp_s3cret"
    )


def _posts(kube_cluster) -> int:
    return len(kube_cluster.requests("POST"))


def test_the_credential_becomes_the_deployments_pull_secret_and_the_stop_deletes_it(connected, kube_cluster, renter):
    listing, _, _ = connected
    credential = _ghcr(renter)
    booking = _booking(renter, listing)
    # names no credential: the one for ghcr.io is picked
    endpoint = _create(booking, renter, now=booking.start - timedelta(minutes=1))
    assert endpoint.registry_credential_id == credential.pk
    assert "Pulling with your credential ghcr-acme for ghcr.io (chosen automatically" in endpoint.message
    assert endpoints.endpoints_tick(now=booking.start).get("endpoints-launched") == 1
    endpoint.refresh_from_db()
    assert endpoint.message.endswith(" Pulling with your credential ghcr-acme for ghcr.io.")
    ns, name = endpoint.namespace, endpoint.k8s_name
    assert name

    secret = kube_cluster.stored(SECRETS, ns, f"{name}-pull")
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert json.loads(base64.b64decode(secret["data"][".dockerconfigjson"])) == {
        "auths": {
            "ghcr.io": {
                "username": "acme-bot",
                "password": "ghp_s3cret",
                "auth": base64.b64encode(b"acme-bot:ghp_s3cret").decode(),
            }
        }
    }
    deployment = kube_cluster.stored(DEPLOYMENTS, ns, name)
    assert [(r["kind"], r["name"], r["uid"]) for r in secret["metadata"]["ownerReferences"]] == [
        ("Deployment", name, deployment["metadata"]["uid"])
    ]
    assert deployment["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": f"{name}-pull"}]
    assert "ghp_s3cret" not in json.dumps(deployment)
    posts = kube_cluster.requests("POST")
    assert posts.index(f"POST /api/v1/namespaces/{ns}/secrets") < posts.index(
        f"POST /apis/apps/v1/namespaces/{ns}/deployments"
    )
    pods = kube_cluster.run_deployment(ns, name)
    assert len(pods) == 2

    endpoints.endpoint_stop(endpoint=endpoint, renter=renter, now=booking.start + timedelta(minutes=5))
    endpoint.refresh_from_db()
    assert endpoint.status == Endpoint.Status.STOPPED
    assert kube_cluster.stored(SECRETS, ns, f"{name}-pull") is None
    assert kube_cluster.stored(DEPLOYMENTS, ns, name) is None


def test_a_public_image_gets_no_pull_secret(connected, kube_cluster, renter):
    listing, _, _ = connected
    _ghcr(renter)  # for ghcr.io, not Docker Hub
    kube_cluster.set_image_user("vllm/vllm-openai:v0.6.3", 1000)
    endpoint = _create(_booking(renter, listing), renter, image="vllm/vllm-openai:v0.6.3")
    assert endpoint.registry_credential_id is None and "credential" not in endpoint.message
    deployment = kube_cluster.stored(DEPLOYMENTS, endpoint.namespace, endpoint.k8s_name)
    assert "imagePullSecrets" not in deployment["spec"]["template"]["spec"]
    assert kube_cluster.stored(SECRETS, endpoint.namespace, f"{endpoint.k8s_name}-pull") is None


def test_the_volume_is_mounted_in_every_replica_and_survives_the_stop(connected, kube_cluster, renter):
    listing, _, _ = connected
    booking = _booking(renter, listing)
    volume = storage.volume_create(renter=renter, booking=booking, size_gib=40)
    endpoint = _create(booking, renter, volume=volume.pk)
    ns, name = endpoint.namespace, endpoint.k8s_name
    assert endpoint.volume_id == volume.pk

    pvc = kube_cluster.stored(PVCS, ns, volume.pvc_name)
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert pvc["spec"]["storageClassName"] == "fast-ssd"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "40Gi"
    assert "ownerReferences" not in pvc["metadata"]
    assert Volume.objects.get(pk=volume.pk).status == Volume.Status.CREATED
    posts = kube_cluster.requests("POST")
    assert posts.index(f"POST /api/v1/namespaces/{ns}/persistentvolumeclaims") < posts.index(
        f"POST /apis/apps/v1/namespaces/{ns}/deployments"
    )
    template = kube_cluster.stored(DEPLOYMENTS, ns, name)["spec"]["template"]["spec"]
    claim = {"name": "workspace", "persistentVolumeClaim": {"claimName": volume.pvc_name}}
    assert claim in template["volumes"]
    assert {"name": "workspace", "mountPath": "/workspace"} in template["containers"][0]["volumeMounts"]
    kube_cluster.run_deployment(ns, name)
    replicas = kube_cluster.deployment_pods(ns, name)
    assert len(replicas) == 2
    for pod in replicas:  # both on the one node, the same claim
        assert pod["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "gpu-a"}
        assert claim in pod["spec"]["volumes"]

    with pytest.raises(ValidationError) as exc:
        storage.volume_delete(renter=renter, volume=volume)
    assert exc.value.message_dict["volume"] == ["A live inference endpoint uses this volume; stop it first."]
    assert kube_cluster.stored(PVCS, ns, volume.pvc_name) is not None

    endpoints.endpoint_stop(endpoint=endpoint, renter=renter, now=booking.start + timedelta(minutes=5))
    assert kube_cluster.stored(DEPLOYMENTS, ns, name) is None
    assert kube_cluster.stored(PVCS, ns, volume.pvc_name) is not None  # the renter's data stays
    assert Volume.objects.get(pk=volume.pk).status == Volume.Status.CREATED

    # A second endpoint uses the same claim (409 on create: it is kept).
    again = _create(booking, renter, name="llm2", volume=volume.pk, now=booking.start + timedelta(minutes=6))
    template = kube_cluster.stored(DEPLOYMENTS, ns, again.k8s_name)["spec"]["template"]["spec"]
    assert claim in template["volumes"]
    endpoints.endpoint_stop(endpoint=again, renter=renter, now=booking.start + timedelta(minutes=7))
    volume.refresh_from_db()
    storage.volume_delete(renter=renter, volume=volume)
    assert kube_cluster.stored(PVCS, ns, volume.pvc_name) is None


def test_bad_storage_input_is_a_field_error_and_nothing_reaches_the_cluster(connected, kube_cluster, renter):
    listing, other, _ = connected
    ngc = storage.registry_credential_create(
        renter=renter, name="ngc", registry="nvcr.io", username="$oauthtoken", password="ngc-key"
    )
    stranger = make_renter()
    theirs = _ghcr(stranger, name="theirs")
    booking = _booking(renter, listing)
    elsewhere = storage.volume_create(renter=renter, booking=_booking(renter, other), size_gib=10)
    their_volume = storage.volume_create(renter=stranger, booking=_booking(stranger, listing, start_in=5), size_gib=10)
    before = _posts(kube_cluster)

    with pytest.raises(ValidationError) as exc:
        _create(booking, renter, registry_credential=ngc.pk, volume=elsewhere.pk)
    errors = exc.value.message_dict
    assert errors["registry_credential"] == [
        f"The credential ngc is for nvcr.io, but the image {IMAGE} is pulled from ghcr.io. "
        "Choose a credential for ghcr.io, or none."
    ]
    assert errors["volume"] == [
        f"The volume {elsewhere.pvc_name} is on gpu-b; this booking runs on gpu-a. "
        "A volume is used only on its own server."
    ]
    with pytest.raises(ValidationError) as exc:
        _create(booking, renter, registry_credential=theirs.pk, volume=their_volume.pk)
    assert exc.value.message_dict == {
        "registry_credential": ["No such registry credential of yours."],
        "volume": ["No such volume of yours."],
    }
    assert not Endpoint.objects.exists()
    assert _posts(kube_cluster) == before


def test_rolling_to_an_image_of_another_registry_than_the_credentials_is_refused(connected, kube_cluster, renter):
    listing, _, _ = connected
    credential = _ghcr(renter)
    booking = _booking(renter, listing)
    endpoint = _create(booking, renter, registry_credential=credential.pk)
    with pytest.raises(ValidationError) as exc:
        endpoints.endpoint_update_image(endpoint=endpoint, renter=renter, image="nvcr.io/nim/llama:1")
    assert exc.value.message_dict["image"] == [
        "This endpoint pulls with your credential ghcr-acme for ghcr.io; nvcr.io/nim/llama:1 is pulled from "
        "nvcr.io. Choose an image from ghcr.io, or create a new endpoint."
    ]
    template = kube_cluster.stored(DEPLOYMENTS, endpoint.namespace, endpoint.k8s_name)["spec"]["template"]["spec"]
    assert template["containers"][0]["image"] == IMAGE
    rolled = endpoints.endpoint_update_image(endpoint=endpoint, renter=renter, image=IMAGE_2)
    assert rolled.image == IMAGE_2
    template = kube_cluster.stored(DEPLOYMENTS, endpoint.namespace, endpoint.k8s_name)["spec"]["template"]["spec"]
    assert template["containers"][0]["image"] == IMAGE_2
    assert template["imagePullSecrets"] == [{"name": f"{endpoint.k8s_name}-pull"}]


def test_the_api_takes_credential_and_volume_ids_of_yours(connected, kube_cluster, renter, api_as):
    listing, _, _ = connected
    credential = _ghcr(renter)
    booking = _booking(renter, listing)
    volume = storage.volume_create(renter=renter, booking=booking, size_gib=10)
    stranger = make_renter()
    theirs = _ghcr(stranger, name="theirs")
    their_volume = storage.volume_create(renter=stranger, booking=_booking(stranger, listing, start_in=5), size_gib=10)
    api = api_as(renter)
    url = f"/api/v1/bookings/{booking.public_id}/endpoints/"
    before = _posts(kube_cluster)

    refused = api.post(
        url,
        {"name": "llm", "image": IMAGE, "registry_credential": theirs.pk, "volume": their_volume.pk},
        format="json",
    )
    assert refused.status_code == 400
    errors = field_errors(refused)
    assert errors["registry_credential"] == ["No such registry credential of yours."]
    assert errors["volume"] == ["No such volume of yours."]
    assert not Endpoint.objects.exists() and _posts(kube_cluster) == before

    created = api.post(
        url,
        {"name": "llm", "image": IMAGE, "replicas": 1, "registry_credential": credential.pk, "volume": volume.pk},
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["registry_credential"], body["volume"]) == (credential.pk, volume.pk)
    endpoint = Endpoint.objects.get()
    assert (endpoint.registry_credential_id, endpoint.volume_id) == (credential.pk, volume.pk)


def test_the_form_offers_your_credentials_and_this_servers_volumes(connected, kube_cluster, renter, client_as):
    listing, other, _ = connected
    credential = _ghcr(renter)
    booking = _booking(renter, listing)
    volume = storage.volume_create(renter=renter, booking=booking, size_gib=10)
    elsewhere = storage.volume_create(renter=renter, booking=_booking(renter, other), size_gib=10)
    page = client_as(renter)
    url = f"/bookings/{booking.public_id}/endpoints/new/"
    form = page.get(url).content.decode()
    assert "ghcr-acme (ghcr.io)" in form and f"{volume.pvc_name} (10 GiB)" in form
    assert elsewhere.pvc_name not in form
    fields = {
        "name": "llm",
        "image": IMAGE,
        "port": 8000,
        "readiness_path": "/health",
        "replicas": 1,
        "gpus_per_replica": 1,
        "registry_credential": credential.pk,
    }
    bad = page.post(url, {**fields, "volume": elsewhere.pk})
    assert bad.status_code == 400 and not Endpoint.objects.exists()
    done = page.post(url, {**fields, "volume": volume.pk})
    assert done.status_code == 302
    endpoint = Endpoint.objects.get()
    assert (endpoint.registry_credential_id, endpoint.volume_id) == (credential.pk, volume.pk)
    detail = page.get(f"/inference/{endpoint.public_id}/").content.decode()
    assert "ghcr-acme" in detail and f"<code>{volume.pvc_name}</code> (10 GiB) at <code>/workspace</code>" in detail


def test_after_a_failover_to_another_server_the_replicas_run_without_the_volume(connected, kube_cluster, renter):
    listing, other, _ = connected
    booking = _booking(renter, listing)
    volume = storage.volume_create(renter=renter, booking=booking, size_gib=10)
    endpoint = _create(booking, renter, volume=volume.pk)
    ns = endpoint.namespace
    # Given: a job's failover moved the booking to gpu-b (as ``booking_move`` does).
    Booking.objects.filter(pk=booking.pk).update(server=other.server, listing=other)
    assert endpoints.endpoints_tick(now=booking.start + timedelta(seconds=20)).get("endpoints-moved") == 1
    assert endpoints.endpoints_tick(now=booking.start + timedelta(seconds=30)).get("endpoints-launched") == 1
    endpoint.refresh_from_db()
    template = kube_cluster.stored(DEPLOYMENTS, ns, endpoint.k8s_name)["spec"]["template"]["spec"]
    assert template["nodeSelector"] == {"kubernetes.io/hostname": "gpu-b"}
    assert not [v for v in template.get("volumes", []) if v["name"] == "workspace"]
    assert endpoint.message.endswith(
        f"Your volume {volume.pvc_name} stays on its server; the replicas run without /workspace."
    )
    assert kube_cluster.stored(PVCS, ns, volume.pvc_name) is not None
