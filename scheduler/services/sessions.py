"""Interactive sessions: a job's HTTP ports (reached through the platform's proxy) and SSH with
the renter's keys; the renter's SSH public keys.

What the renter asks for is stored with the job as ``ExposedPort`` rows (``job_submit`` calls
``session_validate`` before its database write and ``session_record`` in its transaction, so bad
input creates nothing, on the cluster or here). At each launch (the first attempt and every
failover's, ``jobs._launch``) the pod spec gets the ports and the keys (``session_spec_fields``;
the keys as they are then, so a key added later counts from the next attempt), and right after
the Job is created ``session_launch`` creates the Services in front of the pod:

* ``<job>-http`` (ClusterIP), one port per HTTP port: the proxy forwards ``/proxy/<job>/<port>/``
  to it through the API server's service proxy;
* ``<job>-ssh``, of the kind the owner's cluster offers (``Cluster.ssh_service_type``): a NodePort
  (reached at the node's ``external_address``) or a LoadBalancer (its ingress, port 22).

Both are owned by the Job and deleted with it (``delete_job``). An address the cluster assigns
later (a load balancer's ingress) is read on later ticks by ``session_observe``.
``session_info`` is what the job page and the API show: the proxy links and the exact ``ssh``
command, or why there is none yet.

``{base_url}`` in a job's command or arguments becomes the first HTTP port's proxy path at launch
(Jupyter builds its links from it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from accounts.models import User
from scheduler import ssh_keys
from scheduler.backends.base import BackendError, ClusterBackend, JobSpec, SshAddress
from scheduler.models import Cluster, ExposedPort, Job, Node, SshKey
from scheduler.workload_templates import TEMPLATES, Kind

logger = logging.getLogger(__name__)

MAX_HTTP_PORTS = 8
SSH_PORT = 22
MAX_LABEL = 40
MAX_KEYS = 20
BASE_URL = "{base_url}"
SSH_KEYS_PAGE = "/renter/ssh-keys/"


# --- SSH keys -----------------------------------------------------------------------------------


def ssh_key_add(*, user: User, name: str, public_key: str) -> SshKey:
    """Keep a public key for the renter's sessions; a key that does not parse → a ``public_key`` error."""
    errors = {}
    name = (name or "").strip()
    try:
        parsed = ssh_keys.parse_public_key(public_key)
    except ssh_keys.KeyInvalid as exc:
        errors["public_key"] = str(exc)
        parsed = None
    if not name:
        name = (parsed.comment if parsed else "")[:60] or "my key"
    if len(name) > 60:
        errors["name"] = "At most 60 characters."
    if errors:
        raise ValidationError(errors)
    if SshKey.objects.filter(user=user, fingerprint=parsed.fingerprint).exists():
        raise ValidationError({"public_key": f"You already added this key ({parsed.fingerprint})."})
    if SshKey.objects.filter(user=user).count() >= MAX_KEYS:
        raise ValidationError({"public_key": f"At most {MAX_KEYS} keys; delete one first."})
    try:
        with transaction.atomic():
            return SshKey.objects.create(
                user=user,
                name=name,
                key_type=parsed.key_type,
                public_key=parsed.line,
                fingerprint=parsed.fingerprint,
                bits=parsed.bits,
            )
    except IntegrityError:  # the same key added at the same moment
        raise ValidationError({"public_key": f"You already added this key ({parsed.fingerprint})."}) from None


def ssh_key_delete(*, user: User, key: SshKey) -> None:
    """Forget a key; running sessions keep it until their next attempt."""
    if key.user_id != user.pk:
        raise PermissionDenied("This key is not yours.")
    key.delete()


# --- Submission ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortRequest:
    port: int
    label: str


def ports_validate(ports) -> list[PortRequest]:
    """The HTTP ports asked for (a list of ``{"port": 8888, "label": "JupyterLab"}``): each 1–65535,
    no duplicates, not SSH's 22, at most ``MAX_HTTP_PORTS``; else a ``ports`` error per problem."""
    if ports is None:
        return []
    if not isinstance(ports, list | tuple):
        raise ValidationError({"ports": "Give the ports as a list of {port, label}."})
    if len(ports) > MAX_HTTP_PORTS:
        raise ValidationError({"ports": f"At most {MAX_HTTP_PORTS} HTTP ports."})
    problems, seen, out = [], set(), []
    for item in ports:
        port, label = (item.get("port"), item.get("label", "")) if isinstance(item, dict) else (item, "")
        if isinstance(port, bool) or not isinstance(port, int):
            problems.append(f"port {port!r} is not a number")
            continue
        if not 1 <= port <= 65535:
            problems.append(f"port {port} is outside 1–65535")
        elif port in seen:
            problems.append(f"port {port} is already exposed")
        elif port == SSH_PORT:
            problems.append(f"port {SSH_PORT} is kept for SSH; tick “SSH with my keys” instead")
        elif not isinstance(label, str) or len(label) > MAX_LABEL:
            problems.append(f"port {port}: a label is at most {MAX_LABEL} characters")
        else:
            out.append(PortRequest(port=port, label=label.strip()))
        seen.add(port)
    if problems:
        raise ValidationError({"ports": problems})
    return out


def session_validate(*, renter: User, ports, ssh: bool) -> list[PortRequest]:
    """Check a job's session fields before anything is written; errors under ``ports`` / ``ssh``."""
    errors: dict[str, list[str]] = {}
    try:
        requests = ports_validate(ports)
    except ValidationError as exc:
        errors.update(exc.message_dict)
        requests = []
    if ssh and not SshKey.objects.filter(user=renter).exists():
        errors["ssh"] = [f"SSH needs at least one public key: add yours at {SSH_KEYS_PAGE} first."]
    if errors:
        raise ValidationError(errors)
    return requests


def session_record(*, job: Job, ports: list[PortRequest], ssh: bool) -> None:
    """The job's ports, in the caller's (``job_submit``'s) transaction."""
    rows = [ExposedPort(job=job, port=p.port, label=p.label, protocol=ExposedPort.Protocol.HTTP) for p in ports]
    if ssh:
        rows.append(ExposedPort(job=job, port=SSH_PORT, label="SSH", protocol=ExposedPort.Protocol.SSH))
    ExposedPort.objects.bulk_create(rows)


def template_fields(key: str) -> dict:
    """A batch or interactive template's fields as ``job_submit`` takes them (``ValidationError``
    under ``template`` when there is no such template, or it is an inference endpoint's)."""
    template = TEMPLATES.get(key or "")
    if template is None:
        raise ValidationError({"template": f"No template {key!r}; choose one of {', '.join(TEMPLATES)}."})
    if template.kind == Kind.INFERENCE:
        raise ValidationError(
            {"template": f"{template.title} runs as an inference endpoint: create it from the booking's endpoints."}
        )
    return {
        "name": template.key,
        "image": template.image,
        "command": list(template.command),
        "args": list(template.args),
        "env": dict(template.env),
        "ports": [{"port": port, "label": label} for port, label in template.http_ports],
        "ssh": template.ssh,
    }


# --- Launch -------------------------------------------------------------------------------------


def proxy_path(job: Job, port: int) -> str:
    return f"/proxy/{job.public_id}/{port}/"


def launch_args(job: Job) -> list[str]:
    """The job's arguments with ``{base_url}`` replaced by its first HTTP port's proxy path."""
    first = job.ports.filter(protocol=ExposedPort.Protocol.HTTP).order_by("port").first()
    if first is None:
        return list(job.args)
    return [arg.replace(BASE_URL, proxy_path(job, first.port)) for arg in job.args]


def session_spec_fields(job: Job) -> dict:
    """``JobSpec`` fields for this attempt: the HTTP ports, the renter's keys when SSH is asked for,
    and the arguments with ``{base_url}`` filled in."""
    ports = list(job.ports.all())
    http = tuple(p.port for p in ports if p.protocol == ExposedPort.Protocol.HTTP)
    keys: tuple[str, ...] = ()
    if any(p.protocol == ExposedPort.Protocol.SSH for p in ports):
        keys = tuple(SshKey.objects.filter(user_id=job.renter_id).order_by("id").values_list("public_key", flat=True))
    return {"http_ports": http, "ssh_keys": keys, "args": launch_args(job)}


def _external(address: SshAddress, cluster: Cluster, node_address: str) -> tuple[str, int | None]:
    if cluster.ssh_service_type == Cluster.SshServiceType.LOAD_BALANCER:
        return (address.host, address.port) if address.host else ("", None)
    if address.node_port and node_address:
        return node_address, address.node_port
    return "", None


def _node_address(cluster: Cluster, node_name: str) -> str:
    node = Node.objects.filter(cluster=cluster, hostname=node_name).only("external_address").first()
    return node.external_address if node else ""


def session_launch(*, job: Job, spec: JobSpec, job_uid: str, backend: ClusterBackend, cluster: Cluster) -> None:
    """Right after the attempt's Job is created: its Services, and where SSH is reached (when the
    cluster says so already). ``BackendError`` propagates: the caller retries the launch."""
    if not spec.http_ports and not spec.ssh_keys:
        ExposedPort.objects.filter(job=job).update(service_name="", external_host="", external_port=None)
        return
    created = backend.create_session_services(spec, job_uid, ssh_service_type=cluster.ssh_service_type)
    ExposedPort.objects.filter(job=job, protocol=ExposedPort.Protocol.HTTP).update(
        service_name=created.http_service, external_host="", external_port=None
    )
    host, port = _external(created.ssh, cluster, _node_address(cluster, spec.node))
    ExposedPort.objects.filter(job=job, protocol=ExposedPort.Protocol.SSH).update(
        service_name=created.ssh_service, external_host=host, external_port=port
    )


def session_observe(*, job: Job, backend: ClusterBackend | None) -> None:
    """On a tick of a live job: fill in the SSH address the cluster assigned since (once known, no call)."""
    if backend is None or job.cluster_id is None or not job.k8s_name:
        return
    waiting = ExposedPort.objects.filter(
        job=job, protocol=ExposedPort.Protocol.SSH, external_port__isnull=True
    ).exclude(service_name="")
    if not waiting.exists():
        return
    try:
        address = backend.session_ssh_address(job.namespace, job.k8s_name)
    except BackendError as exc:
        logger.info("could not read the SSH address of job %s yet: %s", job.public_id, exc)
        return
    host, port = _external(address, job.cluster, _node_address(job.cluster, job.node_name))
    if port:
        waiting.update(external_host=host, external_port=port)


# --- What the job page and the API show -----------------------------------------------------------


@dataclass(frozen=True)
class HttpLink:
    port: int
    label: str
    url: str  # the platform's proxy path


@dataclass(frozen=True)
class SshAccess:
    host: str
    port: int | None
    user: str  # "" when the image decides (no user namespaces): see ``note``
    command: str  # "" until the cluster assigned an address
    note: str


@dataclass(frozen=True)
class SessionInfo:
    http: tuple[HttpLink, ...]
    ssh: SshAccess | None


def _ssh_user(cluster: Cluster | None) -> tuple[str, str]:
    """(the user to log in as, or "" when it is the image's; what to tell the renter about it)."""
    from scheduler.backends.kubernetes import user_namespaces_supported  # lazy: the SDK is slow to load

    if (
        cluster is not None
        and not cluster.simulated
        and user_namespaces_supported(cluster.server_version, settings.SCHEDULER_USER_NAMESPACES_FROM)
    ):
        return "root", "The container runs in a user namespace: root inside it is an unprivileged user on the node."
    uid = settings.SCHEDULER_RUN_AS_USER
    return "", (
        f"This cluster has no user namespaces, so the container runs as uid {uid}: log in as the image's user "
        f"with that uid (jovyan in the Jupyter images), and the image's sshd must run as that user."
    )


def session_info(job: Job) -> SessionInfo:
    """The job's proxy links and SSH access, as the job page and the API show them."""
    ports = list(job.ports.all())
    http = tuple(
        HttpLink(port=p.port, label=p.label or f"port {p.port}", url=proxy_path(job, p.port))
        for p in ports
        if p.protocol == ExposedPort.Protocol.HTTP
    )
    ssh_port = next((p for p in ports if p.protocol == ExposedPort.Protocol.SSH), None)
    if ssh_port is None:
        return SessionInfo(http=http, ssh=None)
    user, note = _ssh_user(job.cluster)
    command = ""
    if job.cluster is not None and job.cluster.simulated:
        note = "The simulated cluster runs no containers: there is nothing to SSH into."
    elif ssh_port.external_port and ssh_port.external_host:
        command = f"ssh -p {ssh_port.external_port} {user or '<user>'}@{ssh_port.external_host}"
    access = SshAccess(host=ssh_port.external_host, port=ssh_port.external_port, user=user, command=command, note=note)
    return SessionInfo(http=http, ssh=access)


# --- The owner's side ---------------------------------------------------------------------------


def cluster_set_ssh_service_type(*, cluster: Cluster, service_type: str) -> Cluster:
    """How the owner's cluster exposes SSH from the next launch on (running sessions keep theirs)."""
    if service_type not in Cluster.SshServiceType.values:
        raise ValidationError(
            {"ssh_service_type": f"Choose one of {', '.join(Cluster.SshServiceType.values)}, not {service_type!r}."}
        )
    Cluster.objects.filter(pk=cluster.pk).update(ssh_service_type=service_type)
    cluster.ssh_service_type = service_type
    return cluster
