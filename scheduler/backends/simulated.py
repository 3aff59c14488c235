"""The simulated cluster: the embedded default for ``make demo``.

It answers like a Kubernetes cluster with the NVIDIA device plugin, from state
kept in the database (``SimNode``, ``SimJob``) so that the web process and the
scheduler loop share one cluster. A job's life is a function of the clock:
its pod runs ``SCHEDULER_SIM_START_SECONDS`` after creation; a command of the
form ``sleep N`` (or ``... --steps N``) finishes after N seconds, ``false`` or
``exit N`` (N ≠ 0) fails after one second, anything else runs until its
deadline. Failing a node on purpose evicts the pods on it, as a node going
NotReady would.
"""

import math
import re
import shlex
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from scheduler.backends.base import (
    GPU_RESOURCE,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    BackendError,
    ClusterSnapshot,
    DeploymentState,
    EndpointSpec,
    JobRef,
    JobSpec,
    JobState,
    NodeInfo,
    Phase,
    SecretRef,
    SessionServices,
    SshAddress,
    WatchResult,
)
from scheduler.lock_objects import sim_jobs_lock
from scheduler.models import Cluster, SimDeployment, SimJob, SimNode

_SLEEP = re.compile(r"(?:^|[\s'\";])(?:sleep|--steps)[\s=]+(\d+)(?=[\s'\";]|$)")
# Log streaming (storage helper): how much of the synthetic log, how often and how long it is followed.
SIM_LOG_MAX_LINES = 100_000
SIM_LOG_POLL_SECONDS = 2.0
SIM_LOG_MAX_POLLS = 300
_FAIL = re.compile(r"(?:^|[\s'\";])(?:false|exit\s+[1-9]\d*)(?=[\s'\";]|$)")


def _runtime(spec: dict) -> tuple[float | None, bool]:
    """(seconds until the container exits, or None to run to the deadline; exits non-zero?)."""
    line = shlex.join([*spec.get("command", []), *spec.get("args", [])])
    if _FAIL.search(line):
        return 1.0, True
    match = _SLEEP.search(line)
    if match:
        return float(match.group(1)), False
    return None, False


class SimulatedBackend:
    simulated = True

    def __init__(self, cluster: Cluster, *, clock: Callable[[], datetime] = timezone.now):
        self.cluster = cluster
        self.clock = clock

    # --- The operator's and owner's controls (not part of ClusterBackend).

    def add_node(self, *, name: str, gpus: int, product: str, ready: bool = True) -> SimNode:
        node, _ = SimNode.objects.update_or_create(
            cluster=self.cluster,
            name=name,
            defaults={"gpus": gpus, "product": product, "ready": ready, "changed_at": self.clock()},
        )
        return node

    def set_node_ready(self, name: str, ready: bool) -> None:
        """Fail (or restore) a node: its running pods are evicted at once."""
        now = self.clock()
        with transaction.atomic():
            updated = SimNode.objects.filter(cluster=self.cluster, name=name).update(ready=ready, changed_at=now)
            if not updated:
                raise BackendError(f"The simulated cluster has no node {name!r}.")
            if not ready:
                for job in sim_jobs_lock(cluster=self.cluster, node=name):
                    if self._state(job, now, node_ready=True).phase in (Phase.PENDING, Phase.RUNNING):
                        job.interrupted_at = now
                        job.save(update_fields=["interrupted_at"])

    # --- ClusterBackend.

    def check(self) -> None:
        return None

    def server_version(self) -> str:
        return ""

    def list_nodes(self) -> list[NodeInfo]:
        # CPU and memory are not simulated (0 = not reported): a job's share is the server's declaration.
        return [
            NodeInfo(name=n.name, hostname=n.name, gpu_allocatable=n.gpus, gpu_product=n.product, ready=n.ready)
            for n in SimNode.objects.filter(cluster=self.cluster).order_by("name")
        ]

    def ensure_namespace(self, name: str) -> None:
        return None

    def create_job(self, spec: JobSpec) -> JobState:
        now = self.clock()
        node = SimNode.objects.filter(cluster=self.cluster, name=spec.node).first()
        if node is None:
            raise BackendError(f"No node {spec.node!r} in the simulated cluster.")
        body = {
            "labels": {**spec.labels, LABEL_MANAGED_BY: MANAGED_BY},
            "image": spec.image,
            "command": spec.command,
            "args": spec.args,
            "env_names": sorted(spec.env),
            "limits": {GPU_RESOURCE: spec.gpu_count},
            "activeDeadlineSeconds": spec.active_deadline_seconds,
        }
        try:
            with transaction.atomic():
                job = SimJob.objects.create(
                    cluster=self.cluster,
                    namespace=spec.namespace,
                    name=spec.name,
                    node=spec.node,
                    spec=body,
                    created_at=now,
                    deadline=now + timedelta(seconds=spec.active_deadline_seconds),
                )
        except IntegrityError:  # already created: as a 409 from the API server
            job = SimJob.objects.get(cluster=self.cluster, namespace=spec.namespace, name=spec.name)
        return self._state(job, now)

    def job_state(self, namespace: str, name: str) -> JobState:
        job = SimJob.objects.filter(cluster=self.cluster, namespace=namespace, name=name).first()
        if job is None:
            return JobState(uid="", phase=Phase.GONE)
        return self._state(job, self.clock())

    def list_jobs(self) -> list[JobRef]:
        return [
            JobRef(namespace=j.namespace, name=j.name, labels=j.spec.get("labels", {}))
            for j in SimJob.objects.filter(cluster=self.cluster)
        ]

    def delete_job(self, namespace: str, name: str) -> None:
        SimJob.objects.filter(cluster=self.cluster, namespace=namespace, name=name).delete()

    def logs_tail(self, namespace: str, name: str, lines: int = 100) -> str:
        job = SimJob.objects.filter(cluster=self.cluster, namespace=namespace, name=name).first()
        if job is None:
            return ""
        now = self.clock()
        state = self._state(job, now)
        if state.running_since is None or state.running_since > now:
            return ""
        end = min(now, state.finished_at or now)
        gpus = job.spec["limits"][GPU_RESOURCE]
        out = [f"[simulated] pulled {job.spec['image']}; started on {job.node} with {gpus} GPU(s)"]
        steps = int((end - state.running_since).total_seconds() // 10)
        for step in range(max(0, steps - lines), steps):
            loss = 2.5 * math.exp(-step / 200) + 0.05
            out.append(f"step {step + 1:6d}  loss {loss:.4f}  {10 * (step + 1)} s")
        if state.phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.INTERRUPTED):
            out.append(f"[simulated] {state.phase.value}: {state.message}")
        return "\n".join(out[-lines:])

    # --- Snapshots and access checks (scale helper).

    def close(self) -> None:
        return None

    def snapshot(self, reflector: object = None) -> ClusterSnapshot:
        """Every job of the simulated cluster in two queries (its jobs, its nodes)."""
        now = self.clock()
        nodes = {n.name: n for n in SimNode.objects.filter(cluster=self.cluster)}
        states, refs = {}, []
        for job in SimJob.objects.filter(cluster=self.cluster).order_by("pk"):
            node = nodes.get(job.node)
            if node is not None and not node.ready and job.interrupted_at is None:
                job.interrupted_at = max(node.changed_at, job.created_at)  # as ``_state`` reads it
            states[(job.namespace, job.name)] = self._state(job, now, node_ready=True)
            refs.append(JobRef(namespace=job.namespace, name=job.name, labels=job.spec.get("labels", {})))
        return ClusterSnapshot(jobs=states, deployments={}, refs=refs, resource_version="")

    def watch_jobs(self, resource_version: str, timeout_seconds: int = 5) -> WatchResult:
        """No watch here: every job counts as changed (the database is read at each tick anyway)."""
        names = SimJob.objects.filter(cluster=self.cluster).values_list("namespace", "name")
        return WatchResult(changed=frozenset(names), resource_version="")

    def list_secrets(self) -> list[SecretRef]:
        return []  # the simulated cluster keeps no Secrets (env names only)

    def delete_secret(self, namespace: str, name: str) -> None:
        return None

    # --- Services, sessions and SSH (sessions helper).
    # The simulated cluster runs no containers: the Services are noted in the job's JSON (for the
    # record), and an SSH address is never assigned (the job page says so).

    def create_session_services(
        self, spec: JobSpec, job_uid: str, *, ssh_service_type: str = "NodePort"
    ) -> SessionServices:
        http = f"{spec.name}-http" if spec.http_ports else ""
        ssh = f"{spec.name}-ssh" if spec.ssh_keys else ""
        job = SimJob.objects.filter(cluster=self.cluster, namespace=spec.namespace, name=spec.name).first()
        if job is not None:
            job.spec = {**job.spec, "services": {"http": http, "http_ports": list(spec.http_ports), "ssh": ssh}}
            job.save(update_fields=["spec"])
        return SessionServices(http_service=http, ssh_service=ssh)

    def session_ssh_address(self, namespace: str, job_name: str) -> SshAddress:
        return SshAddress()

    # --- Deployments for inference endpoints (endpoints helper).

    def create_endpoint(self, spec: EndpointSpec) -> DeploymentState:
        now = self.clock()
        if not SimNode.objects.filter(cluster=self.cluster, name=spec.pod.node).exists():
            raise BackendError(f"No node {spec.pod.node!r} in the simulated cluster.")
        body = {
            "labels": {**spec.pod.labels, LABEL_MANAGED_BY: MANAGED_BY},
            "image": spec.pod.image,
            "replicas": spec.replicas,
            "port": spec.port,
            "readiness_path": spec.readiness_path,
            "env_names": sorted(spec.pod.env),
            "limits": {GPU_RESOURCE: spec.pod.gpu_count},
            "generation": 1,
        }
        try:
            with transaction.atomic():
                deployment = SimDeployment.objects.create(
                    cluster=self.cluster,
                    namespace=spec.namespace,
                    name=spec.name,
                    node=spec.pod.node,
                    spec=body,
                    created_at=now,
                    rolled_at=now,
                )
        except IntegrityError:  # already created: as a 409 from the API server
            deployment = SimDeployment.objects.get(cluster=self.cluster, namespace=spec.namespace, name=spec.name)
        return self._deployment_state(deployment, now)

    def deployment_state(self, namespace: str, name: str) -> DeploymentState | None:
        deployment = SimDeployment.objects.filter(cluster=self.cluster, namespace=namespace, name=name).first()
        return None if deployment is None else self._deployment_state(deployment, self.clock())

    def list_deployments(self) -> list[DeploymentState]:
        now = self.clock()
        return [self._deployment_state(d, now) for d in SimDeployment.objects.filter(cluster=self.cluster)]

    def set_deployment_image(self, namespace: str, name: str, image: str) -> None:
        deployment = SimDeployment.objects.filter(cluster=self.cluster, namespace=namespace, name=name).first()
        if deployment is None:
            raise BackendError(f"No deployment {namespace}/{name} in the simulated cluster.")
        spec = {**deployment.spec, "image": image, "generation": deployment.spec.get("generation", 1) + 1}
        SimDeployment.objects.filter(pk=deployment.pk).update(spec=spec, rolled_at=self.clock())

    def delete_endpoint(self, namespace: str, name: str) -> None:
        SimDeployment.objects.filter(cluster=self.cluster, namespace=namespace, name=name).delete()

    def _deployment_state(self, deployment: SimDeployment, now: datetime) -> DeploymentState:
        """Ready ``SCHEDULER_SIM_START_SECONDS`` after creation or the last roll; a roll (maxUnavailable 1)
        keeps all but one replica ready meanwhile; none on a node that is NotReady."""
        replicas = int(deployment.spec.get("replicas", 1))
        started = now >= deployment.rolled_at + timedelta(seconds=settings.SCHEDULER_SIM_START_SECONDS)
        rolling = deployment.rolled_at > deployment.created_at
        ready = replicas if started else (max(0, replicas - 1) if rolling else 0)
        node = SimNode.objects.filter(cluster=self.cluster, name=deployment.node).first()
        message = ""
        if node is None or not node.ready:
            ready, message = 0, f"Node {deployment.node} is NotReady"
        generation = int(deployment.spec.get("generation", 1))
        return DeploymentState(
            namespace=deployment.namespace,
            name=deployment.name,
            uid=str(deployment.uid),
            labels=dict(deployment.spec.get("labels", {})),
            image=deployment.spec.get("image", ""),
            replicas=replicas,
            ready_replicas=ready,
            updated_replicas=replicas if started or not rolling else max(0, replicas - 1),
            available_replicas=ready,
            generation=generation,
            observed_generation=generation,
            message=message,
        )

    # --- Registries, volumes and log streaming (storage helper).
    # The simulated cluster pulls nothing and stores no files: a volume claim is accepted and
    # forgotten (jobs still name it in their spec); the log is the synthetic one of ``logs_tail``.

    def ensure_volume(self, namespace: str, name: str, *, storage_class: str, size_gib: int) -> None:
        return None

    def delete_volume(self, namespace: str, name: str) -> None:
        return None

    def logs_full(self, namespace: str, name: str, *, limit_bytes: int) -> bytes:
        return self.logs_tail(namespace, name, lines=SIM_LOG_MAX_LINES).encode()[:limit_bytes]

    def logs_stream(self, namespace: str, name: str, *, follow: bool = True) -> Iterator[bytes]:
        """What the log holds, then (``follow``) the lines it gains, polled every
        ``SIM_LOG_POLL_SECONDS``, until the job is no longer running or ``SIM_LOG_MAX_POLLS`` polls."""
        sent = self.logs_tail(namespace, name, lines=SIM_LOG_MAX_LINES)
        yield (sent + "\n").encode() if sent else b""
        for _ in range(SIM_LOG_MAX_POLLS if follow else 0):
            if self.job_state(namespace, name).phase not in (Phase.PENDING, Phase.RUNNING):
                return
            time.sleep(SIM_LOG_POLL_SECONDS)
            text = self.logs_tail(namespace, name, lines=SIM_LOG_MAX_LINES)
            known = set(sent.splitlines())
            new = [line for line in text.splitlines() if line not in known]
            if new:
                yield ("\n".join(new) + "\n").encode()
            sent = text

    # --- The clock decides.

    def _state(self, job: SimJob, now: datetime, node_ready: bool | None = None) -> JobState:
        start = job.created_at + timedelta(seconds=settings.SCHEDULER_SIM_START_SECONDS)
        base = {"uid": str(job.uid), "node": job.node}
        if node_ready is None:
            node = SimNode.objects.filter(cluster=self.cluster, name=job.node).first()
            if node is not None and not node.ready and job.interrupted_at is None:
                # Pods on a node that went NotReady are lost from that moment.
                job.interrupted_at = max(node.changed_at, job.created_at)
        seconds, fails = _runtime(job.spec)
        exit_at = start + timedelta(seconds=seconds) if seconds is not None else None
        ends = [(t, phase) for t, phase in ((exit_at, Phase.FAILED if fails else Phase.SUCCEEDED),) if t]
        ends.append((job.deadline, Phase.FAILED))
        if job.interrupted_at is not None:
            ends.append((job.interrupted_at, Phase.INTERRUPTED))
        end_at, end_phase = min(ends, key=lambda pair: pair[0])
        if end_at <= now:
            ran = start if start < end_at else None
            message = {
                Phase.SUCCEEDED: "Completed (exit code 0)",
                Phase.FAILED: "DeadlineExceeded" if end_at == job.deadline and not fails else "Error (exit code 1)",
                Phase.INTERRUPTED: "Evicted: the node became NotReady",
            }[end_phase]
            return JobState(**base, phase=end_phase, running_since=ran, finished_at=end_at, message=message)
        if start <= now:
            return JobState(**base, phase=Phase.RUNNING, running_since=start)
        return JobState(**base, phase=Phase.PENDING, message="ContainerCreating")
