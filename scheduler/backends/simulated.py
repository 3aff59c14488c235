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
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from scheduler.backends.base import (
    GPU_RESOURCE,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    BackendError,
    JobRef,
    JobSpec,
    JobState,
    NodeInfo,
    Phase,
)
from scheduler.lock_objects import sim_jobs_lock
from scheduler.models import Cluster, SimJob, SimNode

_SLEEP = re.compile(r"(?:^|[\s'\";])(?:sleep|--steps)[\s=]+(\d+)(?=[\s'\";]|$)")
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

    # --- Services, sessions and SSH (sessions helper).

    # --- Deployments for inference endpoints (endpoints helper).

    # --- Registries, volumes and log streaming (storage helper).

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
