"""Storage for renters' workloads: private-registry credentials and persistent volumes.

**Registry credentials.** A renter saves a login to a private registry (a
``host[:port]`` such as ``ghcr.io``, ``nvcr.io`` or ``registry.example.com:5000``);
the password or token is sealed at rest like a kubeconfig (``scheduler.crypto``)
and never shown again. A job (or an inference endpoint) names one, or, naming
none, gets the renter's credential for its image's registry automatically
(``workload_credential``). At launch the credential becomes the workload's
``kubernetes.io/dockerconfigjson`` Secret ``<name>-pull`` (``pull_config_json``
gives its content; the backend creates the Secret before the Job, hands it to
the Job, and deletes it with the Job), and the pod lists it in
``imagePullSecrets``. A credential for another registry than the image's is a
form error: the kubelet would present it to no one.

**Volumes.** A renter asks for one volume per server they booked
(``volume_create``), up to the owner's ``Cluster.max_volume_gib``, on clusters
whose owner set a storage class (``cluster_set_storage``; blank = none
offered). Nothing is created on the cluster then: the first job that asks for
the volume creates its PVC ``infrafi-vol-<id>`` (ReadWriteOnce, the owner's
storage class) in the renter's namespace at launch (``job_storage_prepare``;
409 = it exists), mounted at ``/workspace``. The PVC is owned by no Job, so it
survives them; only ``volume_delete`` removes it, refused while a live job
uses it. A job on another server cannot use it (form error); after a failover
to another server the next attempt runs without it, and says so.

**Inference endpoints** use both the same way (``endpoints.endpoint_create`` checks them with
``workload_credential`` and ``job_volume_check``; ``endpoint_storage_prepare`` at launch): the pull
Secret ``<deployment>-pull`` is made before the Deployment and handed to it, and deleted with it
at stop; the PVC is mounted at ``/workspace`` in every replica. The PVC is ReadWriteOnce: it
attaches to one node at a time, which is enough because an endpoint's replicas are all pinned to
the booked server's node (they share the one volume, each pod mounting the same claim; writes from
several replicas to the same files are theirs to coordinate). Rolling the image re-checks the
credential's registry against the new image.

This module does not import ``scheduler.services.jobs`` (which calls it).
"""

import base64
import json
import re
from dataclasses import dataclass
from datetime import datetime

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import OwnerCompany, User
from marketplace.models import Booking
from scheduler import crypto
from scheduler.backends import backend_for
from scheduler.backends.base import BackendError, ClusterBackend
from scheduler.models import Cluster, Endpoint, Job, JobEvent, Node, RegistryCredential, Volume

# host[:port]: DNS labels (or an IPv4 address), an optional port 1-65535.
REGISTRY_HOST = re.compile(
    r"^(?P<host>[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*)"
    r"(?::(?P<port>[0-9]{1,5}))?$"
)
CREDENTIAL_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# A StorageClass name is a DNS-1123 subdomain.
STORAGE_CLASS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DOCKER_HUB = "docker.io"
# Docker Hub's names for itself in image references, and the key its credentials go under.
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
MAX_USERNAME = 200
MAX_PASSWORD = 8192
MAX_VOLUME_GIB_LIMIT = 65536
VOLUME_PREFIX = "infrafi-vol-"


def _renter_namespace(renter_id: int) -> str:
    """The renter's namespace on every cluster (the one ``jobs._namespace`` gives)."""
    return f"infrafi-renter-{renter_id}"


def _event(job: Job, at: datetime, kind: str, message: str) -> None:
    JobEvent.objects.create(job=job, at=at, kind=kind, message=message[:500])


# --- Registry credentials -----------------------------------------------------------------


def image_registry(image: str) -> str:
    """The registry an image reference pulls from, as the container runtimes read it: its first
    path component when that has a dot or a port or is ``localhost``, else Docker Hub."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        host = first.lower()
        return DOCKER_HUB if host in DOCKER_HUB_ALIASES else host
    return DOCKER_HUB


def _normal_registry(registry: str) -> str:
    registry = registry.strip().lower()
    for scheme in ("https://", "http://"):
        registry = registry.removeprefix(scheme)
    registry = registry.rstrip("/")
    return DOCKER_HUB if registry in DOCKER_HUB_ALIASES else registry


def registry_credential_create(
    *, renter: User, name: str, registry: str, username: str, password: str
) -> RegistryCredential:
    """Save a registry login; the password (or token) is sealed and never shown again."""
    errors = {}
    host = _normal_registry(registry or "")
    match = REGISTRY_HOST.match(host)
    if not match or len(host) > 253 or (match["port"] and not 1 <= int(match["port"]) <= 65535):
        errors["registry"] = (
            f"{registry!r} is not a registry host; give host[:port], "
            "e.g. ghcr.io, nvcr.io or registry.example.com:5000."
        )
    if not CREDENTIAL_NAME.match(name or ""):
        errors["name"] = "Use lower-case letters, digits and hyphens, like ghcr-acme."
    if not username or len(username) > MAX_USERNAME or ":" in username:
        errors["username"] = f"Give the registry user name (at most {MAX_USERNAME} characters, no colon)."
    if not password or len(password) > MAX_PASSWORD:
        errors["password"] = "Give the password or access token."
    if not errors and RegistryCredential.objects.filter(renter=renter, name=name).exists():
        errors["name"] = f"You already have a credential named {name}."
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            return RegistryCredential.objects.create(
                renter=renter, name=name, registry=host, username=username, password_sealed=crypto.seal(password)
            )
    except IntegrityError as exc:  # the same name saved meanwhile
        raise ValidationError({"name": f"You already have a credential named {name}."}) from exc


def registry_credential_delete(*, renter: User, credential: RegistryCredential) -> None:
    """Forget the credential; jobs that used it keep running (their pull Secret is already made)."""
    if credential.renter_id != renter.pk:
        raise PermissionDenied("This credential is not yours.")
    credential.delete()


def pull_config_json(credential: RegistryCredential) -> str:
    """The ``.dockerconfigjson`` of a pull Secret: ``{"auths": {host: {username, password, auth}}}``,
    ``auth`` being base64 of ``username:password``."""
    password = crypto.unseal(credential.password_sealed)
    key = DOCKER_HUB_AUTH_KEY if credential.registry == DOCKER_HUB else credential.registry
    auth = base64.b64encode(f"{credential.username}:{password}".encode()).decode()
    entry = {"username": credential.username, "password": password, "auth": auth}
    return json.dumps({"auths": {key: entry}}, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class CredentialChoice:
    credential: RegistryCredential | None
    automatic: bool  # picked for the image's registry, the renter having named none


def workload_credential(
    *, renter: User, image: str, credential: RegistryCredential | int | None, field: str = "registry_credential"
) -> CredentialChoice:
    """The credential a job or an endpoint pulls ``image`` with: the one named (the renter's, for the
    image's registry, else a ``ValidationError`` on ``field``), or the renter's for that registry."""
    registry = image_registry(image or "")
    if credential is None or credential == "":
        found = RegistryCredential.objects.filter(renter=renter, registry=registry).order_by("name").first()
        return CredentialChoice(found, automatic=found is not None)
    chosen = credential
    if not isinstance(chosen, RegistryCredential):
        chosen = RegistryCredential.objects.filter(renter=renter, pk=chosen).first() if str(chosen).isdigit() else None
    if chosen is None or chosen.renter_id != renter.pk:
        raise ValidationError({field: "No such registry credential of yours."})
    if chosen.registry != registry:
        raise ValidationError(
            {
                field: f"The credential {chosen.name} is for {chosen.registry}, but the image {image} is pulled "
                f"from {registry}. Choose a credential for {registry}, or none."
            }
        )
    return CredentialChoice(chosen, automatic=False)


# --- Volumes ---------------------------------------------------------------------------------


def _server_cluster(server_id: int) -> Cluster | None:
    node = Node.objects.filter(server_id=server_id).select_related("cluster").first()
    return node.cluster if node is not None else None


def cluster_set_storage(*, cluster: Cluster, owner: OwnerCompany, storage_class: str, max_volume_gib: int) -> Cluster:
    """The owner offers renters volumes on ``storage_class`` (blank: none), each at most ``max_volume_gib``."""
    if cluster.owner_id != owner.pk:
        raise PermissionDenied("This cluster is not yours.")
    storage_class = (storage_class or "").strip()
    errors = {}
    if storage_class and (len(storage_class) > 253 or not STORAGE_CLASS.match(storage_class)):
        errors["storage_class"] = (
            f"{storage_class!r} is not a StorageClass name (lower-case letters, digits, '-' and '.'); "
            "see kubectl get storageclass."
        )
    if not isinstance(max_volume_gib, int) or not 1 <= max_volume_gib <= MAX_VOLUME_GIB_LIMIT:
        errors["max_volume_gib"] = f"Give 1 to {MAX_VOLUME_GIB_LIMIT} GiB."
    if errors:
        raise ValidationError(errors)
    Cluster.objects.filter(pk=cluster.pk).update(storage_class=storage_class, max_volume_gib=max_volume_gib)
    cluster.refresh_from_db()
    return cluster


def volume_create(*, renter: User, booking: Booking, size_gib: int) -> Volume:
    """A volume on the booking's server; its PVC is created by the first job that uses it."""
    if booking.renter_id != renter.pk:
        raise PermissionDenied("This booking is not yours.")
    cluster = _server_cluster(booking.server_id)
    if cluster is None or not cluster.storage_class:
        raise ValidationError({"booking": "This server's owner offers no persistent volumes."})
    if not isinstance(size_gib, int) or not 1 <= size_gib <= cluster.max_volume_gib:
        raise ValidationError({"size_gib": f"Give 1 to {cluster.max_volume_gib} GiB (this owner's limit)."})
    taken = {"booking": "You already have a volume on this server; delete it first to make another."}
    if Volume.objects.filter(renter=renter, server_id=booking.server_id).exclude(status=Volume.Status.DELETED).exists():
        raise ValidationError(taken)
    try:
        with transaction.atomic():
            volume = Volume.objects.create(
                renter=renter,
                server_id=booking.server_id,
                cluster=cluster,
                size_gib=size_gib,
                storage_class=cluster.storage_class,
            )
            volume.pvc_name = f"{VOLUME_PREFIX}{volume.pk}"
            volume.save(update_fields=["pvc_name"])
    except IntegrityError as exc:  # asked twice at once
        raise ValidationError(taken) from exc
    return volume


def volume_delete(*, renter: User, volume: Volume, now: datetime | None = None) -> Volume:
    """Delete the volume and its PVC (its data with it). Refused while a live job uses it; an
    unreachable cluster changes nothing (try again)."""
    if volume.renter_id != renter.pk:
        raise PermissionDenied("This volume is not yours.")
    if volume.status == Volume.Status.DELETED:
        raise ValidationError({"volume": "This volume is already deleted."})
    if Job.objects.filter(volume=volume, status__in=Job.LIVE).exists():
        raise ValidationError({"volume": "A running or pending job uses this volume; stop it first."})
    if Endpoint.objects.filter(volume=volume, status__in=Endpoint.LIVE).exists():
        raise ValidationError({"volume": "A live inference endpoint uses this volume; stop it first."})
    if volume.status == Volume.Status.CREATED:
        backend = backend_for(volume.cluster, clock=lambda: now or timezone.now())
        try:
            backend.delete_volume(_renter_namespace(volume.renter_id), volume.pvc_name)
        except BackendError as exc:
            raise ValidationError({"volume": f"The cluster did not answer; try again. ({exc})"}) from exc
        finally:
            backend.close()
    Volume.objects.filter(pk=volume.pk).update(status=Volume.Status.DELETED)
    volume.refresh_from_db()
    return volume


def job_volume_check(*, renter: User, booking: Booking, volume: Volume | int | None) -> Volume | None:
    """The volume a job on ``booking`` may mount: the renter's, live, on the booked server."""
    if volume is None or volume == "":
        return None
    chosen = volume
    if not isinstance(chosen, Volume):
        chosen = Volume.objects.filter(renter=renter, pk=chosen).first() if str(chosen).isdigit() else None
    if chosen is None or chosen.renter_id != renter.pk or chosen.status == Volume.Status.DELETED:
        raise ValidationError({"volume": "No such volume of yours."})
    if chosen.server_id != booking.server_id:
        raise ValidationError(
            {
                "volume": f"The volume {chosen.pvc_name} is on {chosen.server.hostname}; this booking runs on "
                f"{booking.server.hostname}. A volume is used only on its own server."
            }
        )
    return chosen


# --- At launch -------------------------------------------------------------------------------


def job_storage_prepare(*, job: Job, backend: ClusterBackend, namespace: str, server_id: int, now: datetime) -> dict:
    """What a job's attempt needs of storage, as ``JobSpec`` fields: its pull Secret's content, and
    its volume's claim (the PVC ensured first, in ``namespace``, which must exist). Raises
    ``BackendError`` when the cluster does not answer (the launch is retried)."""
    fields = {}
    if job.registry_credential_id:
        fields["pull_config_json"] = pull_config_json(job.registry_credential)
    volume = job.volume
    if volume is not None and volume.status != Volume.Status.DELETED:
        if volume.server_id != server_id:  # moved by a failover: the PVC stays on its server
            _event(
                job,
                now,
                "volume",
                f"Your volume {volume.pvc_name} stays on its server; this attempt runs without /workspace.",
            )
        else:
            backend.ensure_volume(
                namespace, volume.pvc_name, storage_class=volume.storage_class, size_gib=volume.size_gib
            )
            if volume.status != Volume.Status.CREATED:
                Volume.objects.filter(pk=volume.pk).update(status=Volume.Status.CREATED)
            fields["volume_claim"] = volume.pvc_name
    return fields


def endpoint_storage_prepare(
    *, endpoint: Endpoint, backend: ClusterBackend, namespace: str, server_id: int
) -> tuple[dict, str]:
    """What an endpoint's launch needs of storage, as ``JobSpec`` fields (its pull Secret's content,
    its volume's claim, the PVC ensured in ``namespace``, which must exist), and a note for its
    message (the credential pulled with; "" when none). The PVC is ReadWriteOnce: the replicas
    share it because they all run on the booked server's one node. A volume left on another server
    (the booking moved by a job's failover) is not mounted, and the note says so. Raises
    ``BackendError`` when the cluster does not answer (the launch is retried)."""
    fields, note = {}, ""
    if endpoint.registry_credential_id:
        credential = endpoint.registry_credential
        fields["pull_config_json"] = pull_config_json(credential)
        note = f" Pulling with your credential {credential.name} for {credential.registry}."
    volume = endpoint.volume
    if volume is not None and volume.status != Volume.Status.DELETED:
        if volume.server_id != server_id:
            note += f" Your volume {volume.pvc_name} stays on its server; the replicas run without /workspace."
        else:
            backend.ensure_volume(
                namespace, volume.pvc_name, storage_class=volume.storage_class, size_gib=volume.size_gib
            )
            if volume.status != Volume.Status.CREATED:
                Volume.objects.filter(pk=volume.pk).update(status=Volume.Status.CREATED)
            fields["volume_claim"] = volume.pvc_name
    return fields, note
