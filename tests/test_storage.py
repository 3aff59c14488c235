"""Image-pull secrets and per-renter volumes, over HTTP against the Kubernetes emulator.

A saved registry credential becomes the Job's ``kubernetes.io/dockerconfigjson`` Secret
``<job>-pull`` (created before the Job, owned by it, deleted with it) and the pod's
``imagePullSecrets``, chosen automatically for the image's registry; a credential for another
registry, or a volume on another server, is a form error and nothing reaches the cluster. A
volume is a PVC on the owner's storage class, created at the first job's launch, mounted at
``/workspace``, owned by no Job: two jobs in a row use the same one, and it survives them until
the renter deletes it. Pages and API for credentials, volumes and the owner's storage class."""

import base64
import json
from datetime import timedelta

import pytest
import yaml
from django.core.exceptions import ValidationError

from marketplace.services import bookings
from scheduler.models import Job, RegistryCredential, Volume
from scheduler.services import clusters, jobs, storage
from tests.api_errors import field_errors
from tests.factories import make_listing, next_hour

IMAGE = "ghcr.io/acme/trainer:1.4"
PVCS = "v1/persistentvolumeclaims"
SECRETS = "v1/secrets"


@pytest.fixture(autouse=True)
def _fast_kube(settings):
    settings.SCHEDULER_KUBE_TIMEOUT_SECONDS = 2
    settings.SCHEDULER_KUBE_RETRIES = 2
    settings.SCHEDULER_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]


@pytest.fixture
def connected(owner, kube_cluster):
    listing = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-a")
    other = make_listing(owner, gpu_count=2, price="2.00", hostname="gpu-b")
    kube_cluster.add_node("gpu-a", gpus=2)
    kube_cluster.add_node("gpu-b", gpus=2)
    cluster = clusters.cluster_connect(
        owner=owner.owner_membership.company, name="prod", kubeconfig=yaml.safe_dump(kube_cluster.kubeconfig)
    )
    return listing, other, cluster


def _booking(renter, listing, *, hours=4):
    start = next_hour(1)
    booking = bookings.booking_create(
        renter=renter, listing=listing, gpu_count=2, start=start, end=start + timedelta(hours=hours)
    )
    return bookings.booking_pay(booking=booking, renter=renter)


def _submit(booking, renter, *, at, **kwargs):
    fields = {"name": "train", "image": IMAGE, "command": ["python", "train.py"], "gpu_count": 1, **kwargs}
    return jobs.job_submit(booking=booking, renter=renter, now=at, **fields)


# --- Registry credentials ----------------------------------------------------------------------


def test_a_saved_credential_becomes_the_jobs_pull_secret_owned_by_it_and_deleted_with_it(
    connected, kube_cluster, renter
):
    listing, _, _ = connected
    credential = storage.registry_credential_create(
        renter=renter, name="ghcr-acme", registry="ghcr.io", username="acme-bot", password="ghp_s3cret"
    )
    assert "ghp_s3cret" not in credential.password_sealed
    booking = _booking(renter, listing)
    job = _submit(booking, renter, at=booking.start - timedelta(minutes=1))  # names no credential
    assert job.registry_credential_id == credential.pk
    assert "chosen automatically" in job.events.get(kind="registry").message

    jobs.jobs_tick(now=booking.start)
    job.refresh_from_db()
    secret = kube_cluster.stored(SECRETS, job.namespace, f"{job.k8s_name}-pull")
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    assert config == {
        "auths": {
            "ghcr.io": {
                "username": "acme-bot",
                "password": "ghp_s3cret",
                "auth": base64.b64encode(b"acme-bot:ghp_s3cret").decode(),
            }
        }
    }
    owner_refs = secret["metadata"]["ownerReferences"]
    assert [(r["kind"], r["name"], r["uid"]) for r in owner_refs] == [("Job", job.k8s_name, job.k8s_uid)]
    stored = kube_cluster.stored("batch/v1/jobs", job.namespace, job.k8s_name)
    assert stored["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": f"{job.k8s_name}-pull"}]
    # the Secret was created before the Job: the kubelet needs it to pull
    posts = kube_cluster.requests("POST")
    assert posts.index(f"POST /api/v1/namespaces/{job.namespace}/secrets") < posts.index(
        f"POST /apis/batch/v1/namespaces/{job.namespace}/jobs"
    )

    jobs.job_cancel(job=job, renter=renter, now=booking.start + timedelta(minutes=5))
    assert kube_cluster.stored(SECRETS, job.namespace, f"{job.k8s_name}-pull") is None


def test_a_credential_for_another_registry_is_a_form_error_and_nothing_reaches_the_cluster(
    connected, kube_cluster, renter
):
    listing, _, _ = connected
    nvcr = storage.registry_credential_create(
        renter=renter, name="ngc", registry="nvcr.io", username="$oauthtoken", password="ngc-key"
    )
    booking = _booking(renter, listing)
    before = len(kube_cluster.requests("POST"))
    with pytest.raises(ValidationError) as exc:
        _submit(booking, renter, at=booking.start + timedelta(minutes=1), registry_credential=nvcr.pk)
    assert exc.value.message_dict["registry_credential"] == [
        f"The credential ngc is for nvcr.io, but the image {IMAGE} is pulled from ghcr.io. "
        "Choose a credential for ghcr.io, or none."
    ]
    assert not Job.objects.exists() and len(kube_cluster.requests("POST")) == before
    # a public Docker Hub image with no credential for docker.io: no pull secret at all
    job = _submit(booking, renter, at=booking.start + timedelta(minutes=1), image="pytorch/pytorch:2.3.0-cuda12.1")
    assert job.registry_credential is None and not job.events.filter(kind="registry").exists()
    stored = kube_cluster.stored("batch/v1/jobs", job.namespace, job.k8s_name)
    assert "imagePullSecrets" not in stored["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("registry", "field"),
    [
        ("not a host", "registry"),
        ("ghcr.io:99999", "registry"),
        ("-bad.example", "registry"),
        ("ghcr.io/x", "registry"),
    ],
)
def test_a_registry_that_is_not_a_host_and_port_is_refused(renter, registry, field):
    with pytest.raises(ValidationError) as exc:
        storage.registry_credential_create(renter=renter, name="x", registry=registry, username="u", password="p")
    assert "is not a registry host" in exc.value.message_dict[field][0]
    assert not RegistryCredential.objects.exists()


def test_registry_hosts_with_ports_and_the_image_registry(renter):
    saved = storage.registry_credential_create(
        renter=renter, name="lab", registry="https://Registry.Example.com:5000/", username="u", password="p"
    )
    assert saved.registry == "registry.example.com:5000"
    assert storage.image_registry("registry.example.com:5000/team/model:1") == "registry.example.com:5000"
    assert storage.image_registry("pytorch/pytorch:2.3.0") == "docker.io"
    assert storage.image_registry("ubuntu") == "docker.io"
    assert storage.image_registry("localhost/x") == "localhost"


def test_registries_page_and_api_never_show_the_password(renter, client_as, api_as):
    page = client_as(renter)
    answer = page.post(
        "/renter/registries/", {"name": "ghcr-acme", "registry": "ghcr.io", "username": "bot", "password": "tok-123"}
    )
    assert answer.status_code == 302
    listing = page.get("/renter/registries/")
    assert b"ghcr-acme" in listing.content and b"tok-123" not in listing.content
    bad = page.post("/renter/registries/", {"name": "x", "registry": "a b", "username": "u", "password": "p"})
    assert bad.status_code == 400 and b"is not a registry host" in bad.content

    api = api_as(renter)
    created = api.post(
        "/api/v1/registries/",
        {"name": "ngc", "registry": "nvcr.io", "username": "$oauthtoken", "password": "ngc-key"},
        format="json",
    )
    assert created.status_code == 201 and "password" not in created.json()
    assert sorted(c["name"] for c in api.get("/api/v1/registries/").json()) == ["ghcr-acme", "ngc"]
    refused = api.post(
        "/api/v1/registries/", {"name": "y", "registry": "no way", "username": "u", "password": "p"}, format="json"
    )
    assert refused.status_code == 400 and "registry" in field_errors(refused)
    assert api.delete(f"/api/v1/registries/{created.json()['id']}/").status_code == 204
    page.post("/renter/registries/", {"delete": RegistryCredential.objects.get(name="ghcr-acme").pk})
    assert not RegistryCredential.objects.exists()


def test_another_renters_credential_is_not_found(renter, client_as, api_as):
    from tests.factories import make_renter

    theirs = storage.registry_credential_create(
        renter=make_renter(), name="theirs", registry="ghcr.io", username="u", password="p"
    )
    assert client_as(renter).post("/renter/registries/", {"delete": theirs.pk}).status_code == 404
    assert api_as(renter).delete(f"/api/v1/registries/{theirs.pk}/").status_code == 404
    assert RegistryCredential.objects.filter(pk=theirs.pk).exists()


# --- Volumes ---------------------------------------------------------------------------------


def test_two_jobs_in_a_row_use_the_same_pvc_which_survives_them_until_deleted(connected, kube_cluster, renter, owner):
    listing, _, cluster = connected
    storage.cluster_set_storage(
        cluster=cluster, owner=owner.owner_membership.company, storage_class="fast-ssd", max_volume_gib=200
    )
    booking = _booking(renter, listing)
    with pytest.raises(ValidationError) as exc:
        storage.volume_create(renter=renter, booking=booking, size_gib=500)
    assert exc.value.message_dict["size_gib"] == ["Give 1 to 200 GiB (this owner's limit)."]
    volume = storage.volume_create(renter=renter, booking=booking, size_gib=50)
    assert volume.pvc_name == f"infrafi-vol-{volume.pk}" and volume.status == Volume.Status.REQUESTED
    namespace = f"infrafi-renter-{renter.pk}"
    assert kube_cluster.stored(PVCS, namespace, volume.pvc_name) is None  # nothing until a job uses it

    first = _submit(booking, renter, at=booking.start - timedelta(minutes=1), volume=volume.pk, image="busybox:1.36")
    jobs.jobs_tick(now=booking.start)
    first.refresh_from_db()
    pvc = kube_cluster.stored(PVCS, namespace, volume.pvc_name)
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "fast-ssd",
        "resources": {"requests": {"storage": "50Gi"}},
    }
    assert "ownerReferences" not in pvc["metadata"]  # owned by no Job: it outlives them
    pod = kube_cluster.stored("batch/v1/jobs", namespace, first.k8s_name)["spec"]["template"]["spec"]
    assert {"name": "workspace", "persistentVolumeClaim": {"claimName": volume.pvc_name}} in pod["volumes"]
    assert {"name": "workspace", "mountPath": "/workspace"} in pod["containers"][0]["volumeMounts"]
    volume.refresh_from_db()
    assert volume.status == Volume.Status.CREATED
    with pytest.raises(ValidationError) as exc:  # in use by a live job
        storage.volume_delete(renter=renter, volume=volume)
    assert "stop it first" in exc.value.message_dict["volume"][0]

    jobs.job_cancel(job=first, renter=renter, now=booking.start + timedelta(minutes=10))
    assert kube_cluster.stored("batch/v1/jobs", namespace, first.k8s_name) is None
    assert kube_cluster.stored(PVCS, namespace, volume.pvc_name)["metadata"]["uid"] == pvc["metadata"]["uid"]

    second = _submit(booking, renter, at=booking.start + timedelta(minutes=11), volume=volume.pk, image="busybox:1.36")
    second.refresh_from_db()
    pod = kube_cluster.stored("batch/v1/jobs", namespace, second.k8s_name)["spec"]["template"]["spec"]
    assert {"name": "workspace", "persistentVolumeClaim": {"claimName": volume.pvc_name}} in pod["volumes"]
    assert kube_cluster.stored(PVCS, namespace, volume.pvc_name)["metadata"]["uid"] == pvc["metadata"]["uid"]

    jobs.job_cancel(job=second, renter=renter, now=booking.start + timedelta(minutes=20))
    storage.volume_delete(renter=renter, volume=volume)
    assert kube_cluster.stored(PVCS, namespace, volume.pvc_name) is None
    assert Volume.objects.get(pk=volume.pk).status == Volume.Status.DELETED


def test_a_volume_on_another_server_is_a_form_error(connected, kube_cluster, renter, owner):
    listing, other, cluster = connected
    storage.cluster_set_storage(
        cluster=cluster, owner=owner.owner_membership.company, storage_class="fast-ssd", max_volume_gib=100
    )
    volume = storage.volume_create(renter=renter, booking=_booking(renter, other), size_gib=10)
    booking = _booking(renter, listing)
    before = len(kube_cluster.requests("POST"))
    with pytest.raises(ValidationError) as exc:
        _submit(booking, renter, at=booking.start + timedelta(minutes=1), volume=volume.pk)
    assert exc.value.message_dict["volume"] == [
        f"The volume {volume.pvc_name} is on gpu-b; this booking runs on gpu-a. "
        "A volume is used only on its own server."
    ]
    assert not Job.objects.exists() and len(kube_cluster.requests("POST")) == before


def test_no_volumes_without_the_owners_storage_class_and_the_owner_sets_it_on_the_cluster_page(
    connected, renter, owner, client_as
):
    listing, _, cluster = connected
    booking = _booking(renter, listing)
    with pytest.raises(ValidationError) as exc:
        storage.volume_create(renter=renter, booking=booking, size_gib=10)
    assert exc.value.message_dict["booking"] == ["This server's owner offers no persistent volumes."]
    page = client_as(owner)
    assert b"cluster-storage" in page.get(f"/owner/clusters/{cluster.pk}/").content
    bad = page.post(f"/owner/clusters/{cluster.pk}/storage/", {"storage_class": "Not_A_Name", "max_volume_gib": 10})
    assert bad.status_code == 302
    cluster.refresh_from_db()
    assert cluster.storage_class == ""
    page.post(f"/owner/clusters/{cluster.pk}/storage/", {"storage_class": "fast-ssd", "max_volume_gib": 80})
    cluster.refresh_from_db()
    assert (cluster.storage_class, cluster.max_volume_gib) == ("fast-ssd", 80)

    renter_page = client_as(renter)
    made = renter_page.post("/renter/volumes/", {"booking": str(booking.public_id), "size_gib": 20})
    assert made.status_code == 302
    volume = Volume.objects.get(renter=renter)
    assert volume.size_gib == 20 and volume.storage_class == "fast-ssd"
    assert volume.pvc_name.encode() in renter_page.get("/renter/volumes/").content
    renter_page.post("/renter/volumes/", {"delete": volume.pk})  # never used: nothing on the cluster to delete
    assert Volume.objects.get(pk=volume.pk).status == Volume.Status.DELETED


def test_the_job_form_and_api_take_a_credential_a_volume_and_the_failover_choice(
    connected, kube_cluster, renter, owner, client_as, api_as
):
    listing, _, cluster = connected
    storage.cluster_set_storage(
        cluster=cluster, owner=owner.owner_membership.company, storage_class="fast-ssd", max_volume_gib=100
    )
    booking = _booking(renter, listing)
    ngc = storage.registry_credential_create(renter=renter, name="ngc", registry="nvcr.io", username="u", password="p")
    volume = storage.volume_create(renter=renter, booking=booking, size_gib=10)
    page = client_as(renter)
    form = {"name": "train", "image": IMAGE, "command": "python train.py", "gpu_count": 1}
    wrong = page.post(f"/bookings/{booking.public_id}/jobs/new/", {**form, "registry_credential": ngc.pk})
    assert wrong.status_code == 400 and b"The credential ngc is for nvcr.io" in wrong.content
    assert not Job.objects.exists()

    done = page.post(
        f"/bookings/{booking.public_id}/jobs/new/",
        {**form, "image": "nvcr.io/nvidia/pytorch:24.05-py3", "volume": volume.pk, "allow_other_regions": "on"},
    )
    assert done.status_code == 302
    job = Job.objects.get()
    assert (job.registry_credential_id, job.volume_id, job.allow_other_regions) == (ngc.pk, volume.pk, True)
    detail = page.get(f"/jobs/{job.public_id}/").content.decode()
    assert "chosen automatically" in detail and volume.pvc_name in detail and "May move to another region" in detail

    answer = api_as(renter).post(
        f"/api/v1/bookings/{booking.public_id}/jobs/",
        {"name": "api-job", "image": IMAGE, "gpu_count": 1, "volume": volume.pk, "registry_credential": ngc.pk},
        format="json",
    )
    assert answer.status_code == 400 and "registry_credential" in field_errors(answer)
    answer = api_as(renter).post(
        f"/api/v1/bookings/{booking.public_id}/jobs/",
        {"name": "api-job", "image": IMAGE, "gpu_count": 1, "volume": volume.pk},
        format="json",
    )
    assert answer.status_code == 201
    body = answer.json()
    assert (body["volume"], body["registry_credential"], body["allow_other_regions"]) == (volume.pk, None, False)


def test_the_registries_api_needs_the_book_scope(renter):
    from accounts.services import api_token_issue
    from tests.test_api_tokens import with_token

    body = {"name": "ghcr", "registry": "ghcr.io", "username": "u", "password": "p"}
    read_only = with_token(api_token_issue(user=renter, name="r", scope="read").key)
    refused = read_only.post("/api/v1/registries/", body, format="json")
    assert refused.status_code == 403 and "with the book scope" in refused.content.decode()
    assert not RegistryCredential.objects.exists()
    booking_scope = with_token(api_token_issue(user=renter, name="b", scope="book").key)
    assert booking_scope.post("/api/v1/registries/", body, format="json").status_code == 201
