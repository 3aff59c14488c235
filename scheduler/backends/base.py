"""The one interface every cluster backend implements.

The scheduler's services talk to clusters only through ``ClusterBackend``:
``KubernetesBackend`` (the official client against a real API server) and
``SimulatedBackend`` (the embedded default, state in the database). Values
crossing the interface are plain dataclasses, so services never see a
Kubernetes object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

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

    # -- services, sessions and SSH (sessions helper) --

    # -- deployments for inference endpoints (endpoints helper) --

    # -- registries, volumes and log streaming (storage helper) --
