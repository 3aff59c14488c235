"""The one interface every cluster backend implements.

The scheduler's services talk to clusters only through ``ClusterBackend``:
``KubernetesBackend`` (the official client against a real API server) and
``SimulatedBackend`` (the embedded default, state in the database). Values
crossing the interface are plain dataclasses, so services never see a
Kubernetes object.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

# Labels every Job of ours carries; the garbage collector selects on MANAGED_BY.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "infrafi"
LABEL_BOOKING = "infrafi.io/booking"
LABEL_JOB = "infrafi.io/job"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
HOSTNAME_LABEL = "kubernetes.io/hostname"


class BackendError(Exception):
    """The cluster could not be reached or answered with an error (after retries)."""


class BackendForbidden(BackendError):
    """The credentials work but lack a permission we need (e.g. create Jobs)."""


class Phase(StrEnum):
    PENDING = "pending"  # created, no pod running yet
    RUNNING = "running"  # a pod is running
    SUCCEEDED = "succeeded"  # the pod exited 0
    FAILED = "failed"  # the pod exited non-zero, or the deadline passed
    INTERRUPTED = "interrupted"  # pod evicted, or its node NotReady
    GONE = "gone"  # no such Job (deleted, or never created)


@dataclass(frozen=True)
class NodeInfo:
    name: str  # the node's name (= its kubernetes.io/hostname label when present)
    hostname: str
    gpu_allocatable: int
    gpu_product: str  # the nvidia.com/gpu.product label, "" when absent
    ready: bool
    cpu_allocatable_milli: int = 0  # status.allocatable.cpu in millicores (0 = not reported)
    memory_allocatable_mib: int = 0  # status.allocatable.memory in MiB, rounded down
    external_address: str = ""  # status.addresses: ExternalIP, else InternalIP ("" when none; sessions helper)


@dataclass(frozen=True)
class JobSpec:
    name: str  # a DNS-1123 name, unique in its namespace
    namespace: str
    node: str  # hostname the pod is pinned to
    image: str
    command: list[str]
    args: list[str]
    env: dict[str, str]
    gpu_count: int
    active_deadline_seconds: int
    labels: dict[str, str] = field(default_factory=dict)
    ttl_seconds_after_finished: int = 3600
    # The job's share of its server (see ``scheduler.services.jobs._share``); 0 = no request.
    cpu_milli: int = 0
    memory_mib: int = 0
    # Sessions (sessions helper): container ports to expose over HTTP, and the renter's SSH public keys
    # (authorized_keys lines; empty = no SSH).
    http_ports: tuple[int, ...] = ()
    ssh_keys: tuple[str, ...] = ()
    # Storage (storage helper): the ``.dockerconfigjson`` of the Job's pull Secret ``<name>-pull``
    # ("" = a public image), and the renter's PVC mounted at ``/workspace`` ("" = none).
    pull_config_json: str = ""
    volume_claim: str = ""


@dataclass(frozen=True)
class JobState:
    uid: str  # the Job's metadata.uid ("" when GONE)
    phase: Phase
    running_since: datetime | None = None  # when its pod's container started running
    finished_at: datetime | None = None  # when it stopped running (any terminal phase)
    node: str = ""
    message: str = ""


@dataclass(frozen=True)
class JobRef:
    namespace: str
    name: str
    labels: dict[str, str]


@dataclass(frozen=True)
class DeploymentState:
    """A Deployment of ours as the cluster reports it (an inference endpoint's replicas)."""

    namespace: str
    name: str
    uid: str
    labels: dict[str, str]
    image: str  # the image of its pod template's main container
    replicas: int  # desired
    ready_replicas: int
    updated_replicas: int
    available_replicas: int
    generation: int = 0
    observed_generation: int = 0
    message: str = ""  # why it does not progress (a Progressing=False / ReplicaFailure condition), "" otherwise


@dataclass(frozen=True)
class ClusterSnapshot:
    """Everything of ours on one cluster, read with one list call per kind (label selector
    ``app.kubernetes.io/managed-by=infrafi``) at the start of its tick."""

    jobs: dict[tuple[str, str], JobState]  # (namespace, name) -> state, every Job of ours
    deployments: dict[tuple[str, str], DeploymentState]
    refs: list[JobRef]  # every Job of ours, for the collector
    resource_version: str = ""  # of the Jobs list, where a watch resumes

    def job_state(self, namespace: str, name: str) -> JobState:
        return self.jobs.get((namespace, name)) or JobState(uid="", phase=Phase.GONE)

    def deployment(self, namespace: str, name: str) -> DeploymentState | None:
        return self.deployments.get((namespace, name))


@dataclass(frozen=True)
class SshAddress:
    """An SSH Service's address as the cluster assigned it (sessions helper): ``node_port`` for a
    NodePort Service (reached at a node's address), ``host`` and ``port`` 22 for a LoadBalancer once
    its ingress is known; ``None`` / "" while pending."""

    node_port: int | None = None
    host: str = ""
    port: int | None = None


@dataclass(frozen=True)
class SessionServices:
    """The Services created for a job's session (sessions helper); "" when not created."""

    http_service: str = ""
    ssh_service: str = ""
    ssh: SshAddress = field(default_factory=SshAddress)


@dataclass(frozen=True)
class WatchResult:
    """What a watch of our Jobs saw (scale helper): the changed Jobs, where to resume, or that the
    resource version expired (HTTP 410 Gone, or an ERROR event with code 410) and a relist is due."""

    changed: frozenset[tuple[str, str]]  # (namespace, name)
    resource_version: str  # the newest seen (a bookmark or an object's), "" when expired
    expired: bool = False


@dataclass(frozen=True)
class SecretRef:
    """A Secret of ours (scale helper: the collector deletes a Job's env Secret that outlived it)."""

    namespace: str
    name: str
    labels: dict[str, str]
    created_at: datetime | None = None


class ClusterBackend(Protocol):
    simulated: bool

    def check(self) -> None:
        """Reachable, and allowed to create Jobs; raises BackendError / BackendForbidden."""

    def server_version(self) -> str:
        """The API server's version (``gitVersion``, e.g. ``v1.33.1``; "" for the simulated cluster)."""

    def list_nodes(self) -> list[NodeInfo]: ...

    def ensure_namespace(self, name: str) -> None:
        """Create the namespace if absent (409 = already there)."""

    def create_job(self, spec: JobSpec) -> JobState:
        """Create the Job; 409 means it already exists, and its state is returned."""

    def job_state(self, namespace: str, name: str) -> JobState: ...

    def list_jobs(self) -> list[JobRef]:
        """Every Job we manage (label app.kubernetes.io/managed-by=infrafi), in all namespaces."""

    def delete_job(self, namespace: str, name: str) -> None:
        """Delete the Job and its pods (background propagation); 404 is fine."""

    def logs_tail(self, namespace: str, name: str, lines: int = 100) -> str:
        """The last ``lines`` lines of the Job's pod log ("" when no pod yet)."""

    # -- snapshots, watches and access checks (scale helper) --

    def close(self) -> None:
        """Release the connection pool (a backend is built per tick and closed at its end)."""

    def snapshot(self, reflector: Any = None) -> ClusterSnapshot:
        """Every Job, pod, Deployment and node of ours in one call per kind (see ``ClusterSnapshot``);
        with a ``reflector`` (``kubernetes.Reflector``; the simulated cluster ignores it), Jobs and pods
        are watched from where it stopped rather than listed again."""

    def watch_jobs(self, resource_version: str, timeout_seconds: int = 5) -> WatchResult:
        """The names of our Jobs changed since ``resource_version``; ``expired`` (410 Gone): relist."""

    def list_secrets(self) -> list[SecretRef]:
        """Every Secret we manage (label app.kubernetes.io/managed-by=infrafi), in all namespaces."""

    def delete_secret(self, namespace: str, name: str) -> None:
        """Delete the Secret; 404 is fine."""

    # -- services, sessions and SSH (sessions helper) --

    def create_session_services(
        self, spec: JobSpec, job_uid: str, *, ssh_service_type: str = "NodePort"
    ) -> SessionServices:
        """After ``create_job``: the ClusterIP Service ``<job>-http`` (one port per ``spec.http_ports``)
        and, with ``spec.ssh_keys``, the SSH Service ``<job>-ssh`` of ``ssh_service_type``, both selecting
        the job's pod and owned by the Job; 409 = already there. Returns their names and SSH address."""

    def session_ssh_address(self, namespace: str, job_name: str) -> SshAddress:
        """Where the job's SSH Service is reachable as the cluster reports it now (see ``SshAddress``)."""

    # -- deployments for inference endpoints (endpoints helper) --

    def create_endpoint(self, spec: EndpointSpec) -> DeploymentState:
        """The env Secret, the Deployment and its ClusterIP Service; 409 means they exist (and are kept)."""

    def deployment_state(self, namespace: str, name: str) -> DeploymentState | None:
        """Our Deployment as the cluster reports it (None: no such Deployment)."""

    def list_deployments(self) -> list[DeploymentState]:
        """Every Deployment we manage (label app.kubernetes.io/managed-by=infrafi), in all namespaces."""

    def set_deployment_image(self, namespace: str, name: str, image: str) -> None:
        """Patch the pod template's image: the Deployment rolls its pods (strategy of ``EndpointSpec``)."""

    def delete_endpoint(self, namespace: str, name: str) -> None:
        """Delete the Deployment (its pods in the background), its Service and its env Secret; 404 is fine."""

    # -- registries, volumes and log streaming (storage helper) --

    def ensure_volume(self, namespace: str, name: str, *, storage_class: str, size_gib: int) -> None:
        """Create the PVC (ReadWriteOnce, owned by no Job: it outlives them); 409 = there already."""

    def delete_volume(self, namespace: str, name: str) -> None:
        """Delete the PVC; 404 is fine."""

    def logs_stream(self, namespace: str, name: str, *, follow: bool = True) -> Iterator[bytes]:
        """The log of the Job's newest pod in chunks, following new output until the container
        ends (``follow``); nothing when there is no pod yet. Closing the iterator stops it."""

    def logs_full(self, namespace: str, name: str, *, limit_bytes: int) -> bytes:
        """The whole log of the Job's newest pod, at most ``limit_bytes`` (b"" when no pod yet)."""


# --- Inference endpoints (endpoints helper) ------------------------------------------------

LABEL_ENDPOINT = "infrafi.io/endpoint"


@dataclass(frozen=True)
class EndpointSpec:
    """An inference endpoint's Deployment: ``replicas`` pods of ``pod`` (a ``JobSpec`` giving the
    image, env, node, GPUs and CPU/memory share of one replica; its name is the Deployment's), each
    ready when ``readiness_path`` answers on ``port``, behind a ClusterIP Service of that name."""

    pod: JobSpec
    replicas: int
    port: int
    readiness_path: str

    @property
    def name(self) -> str:
        return self.pod.name

    @property
    def namespace(self) -> str:
        return self.pod.namespace
