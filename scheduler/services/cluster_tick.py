"""The per-cluster tick: one backend, one snapshot, every job of the cluster advanced from it.

``jobs_tick`` used to read each job's Kubernetes Job, pods and node with a
backend (a connection pool) of its own, cluster after cluster: requests grew
with the jobs, and one slow cluster delayed them all. Now each cluster has a
tick of its own (``cluster_tick``; Celery runs one task per cluster, see
``scheduler.tasks``), which

1. reads the cluster's live jobs from the database, *then* takes one
   ``ClusterSnapshot`` (one request per kind for Jobs, pods, Deployments and
   nodes: a constant number however many jobs run). Jobs and pods come from
   this process's ``Reflector`` of the cluster: the first tick lists them,
   later ones resume a watch at the last resourceVersion and apply its
   events (a version the API server no longer has, 410 Gone, lists again). In that order, a job
   whose row names an attempt had its Job created before the snapshot was
   listed, so a Job missing from the snapshot really is gone;
2. advances each of those jobs from the snapshot (``jobs.job_advance`` with
   the tick's backend and snapshot: the ``TRANSITIONS`` table decides);
3. collects, from the same snapshot's refs, the Jobs of ours that should not
   exist and the env Secrets whose Job is gone (``jobs.jobs_collect_cluster``,
   ``jobs.secrets_collect_cluster``; a Job a step of this tick already deleted
   is deleted again, a 404 that is fine), and keeps the Jobs list's
   ``resourceVersion`` (``Cluster.jobs_resource_version``, where a watch
   resumes: ``KubernetesBackend.watch_jobs``);
4. runs the extra per-cluster steps other features register in
   ``CLUSTER_STEPS``, with the same backend and snapshot;
5. closes the backend.

A cluster that does not answer is marked unhealthy; only its jobs wait
(``Seen.NO_ANSWER``), and nothing else of it changes. Jobs on no cluster
(not launched yet, or their cluster removed) are advanced by
``unplaced_tick``, which needs no snapshot.

Both take ``advanced``: the ids of jobs already advanced in this round are
skipped, and the ids advanced are added, so that ``jobs.jobs_tick`` (the
embedded mode: every cluster in turn, then the unplaced jobs) steps each job
once even when a failover moved it to a cluster whose turn comes later.
"""

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.utils import timezone

from scheduler.backends import backend_for
from scheduler.backends.base import BackendError, ClusterBackend, ClusterSnapshot
from scheduler.models import Cluster, Job
from scheduler.services import endpoints as endpoint_services
from scheduler.services import jobs as job_services
from scheduler.services.clusters import cluster_mark_unhealthy

logger = logging.getLogger(__name__)

ClusterStep = Callable[[Cluster, ClusterBackend, ClusterSnapshot, datetime], dict]

# Extra steps of every cluster's tick, run after its jobs with the tick's backend and snapshot; each
# returns counts to add to the tick's. Features append theirs at import (the endpoints helper: its
# Deployments). A step that raises is logged and does not stop the others.
CLUSTER_STEPS: list[ClusterStep] = [endpoint_services.endpoints_cluster_step]


# Our Jobs and pods per cluster as the last tick in this process left them (``Reflector``), so that
# the next one watches from there; keyed by the cluster and its credentials (a new kubeconfig, or a
# new operator permission, starts afresh), bounded, oldest dropped first. Another process (a Celery
# worker's other child) keeps its own and lists once before it watches too.
REFLECTORS_MAX = 1000
_reflectors: OrderedDict[int, tuple[str, Any]] = OrderedDict()


def _snapshot(cluster: Cluster, backend: ClusterBackend) -> ClusterSnapshot:
    """The cluster's snapshot; on Kubernetes, from this process's reflector of it (see above)."""
    if backend.simulated:
        return backend.snapshot()
    from scheduler.backends.kubernetes import Reflector  # lazy, as backend_for: the SDK is slow to load

    fingerprint = hashlib.sha256(f"{cluster.kubeconfig_sealed}|{cluster.private_network_allowed}".encode()).hexdigest()
    known = _reflectors.pop(cluster.pk, None)
    reflector = known[1] if known is not None and known[0] == fingerprint else Reflector()
    reflector.watch_seconds = settings.SCHEDULER_WATCH_SECONDS
    snapshot = backend.snapshot(reflector=reflector)
    _reflectors[cluster.pk] = (fingerprint, reflector)
    while len(_reflectors) > REFLECTORS_MAX:
        _reflectors.popitem(last=False)
    return snapshot


def merge_counts(into: dict[str, int], counts: dict[str, int]) -> dict[str, int]:
    for key, value in counts.items():
        into[key] = into.get(key, 0) + value
    return into


def _advance_all(jobs: list[Job], now: datetime, counts: dict[str, int], advanced: set[int], **given) -> dict[str, int]:
    for job in jobs:
        advanced.add(job.pk)
        try:
            outcome = job_services.job_advance(job=job, now=now, **given)
        except SoftTimeLimitExceeded:  # the task's time is up (scheduler.tasks): stop here, not per job
            raise
        except Exception:  # one job's failure must not stop the others
            logger.exception("advancing job %s failed", job.public_id)
            outcome = job_services.Advance.ERROR
        counts[outcome.value] = counts.get(outcome.value, 0) + 1
    return counts


def _live(advanced: set[int]):
    return (
        Job.objects.filter(status__in=Job.LIVE)
        .exclude(pk__in=advanced)
        .select_related("booking", "cluster")
        .order_by("pk")
    )


def cluster_tick(*, cluster_id: int, now: datetime | None = None, advanced: set[int] | None = None) -> dict[str, int]:
    """One cluster's tick (see the module docstring); returns counts by ``Advance`` value, plus
    ``collected`` (Jobs deleted), ``secrets_collected`` and what ``CLUSTER_STEPS`` count."""
    now = now or timezone.now()
    advanced = set() if advanced is None else advanced
    cluster = Cluster.objects.filter(pk=cluster_id).first()
    if cluster is None:  # removed since the fan-out
        return {}
    jobs = list(_live(advanced).filter(cluster=cluster))  # before the snapshot: see the module docstring
    counts: dict[str, int] = {}
    backend: ClusterBackend | None = None
    snapshot: ClusterSnapshot | None = None
    error: BackendError | None = None
    try:
        try:
            backend = backend_for(cluster, clock=lambda: now)
            snapshot = _snapshot(cluster, backend)
        except BackendError as exc:
            error = exc
            cluster_mark_unhealthy(cluster=cluster, error=exc, now=now)
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:  # an answer we cannot read: this cluster's jobs wait, as if it did not answer
            logger.exception("the snapshot of cluster %s failed", cluster.pk)
            error = BackendError(f"Could not read the cluster's state ({type(exc).__name__}).")
            cluster_mark_unhealthy(cluster=cluster, error=error, now=now)
        _advance_all(jobs, now, counts, advanced, backend=backend, snapshot=snapshot, error=error)
        if snapshot is None:
            return counts
        Cluster.objects.filter(pk=cluster.pk).update(jobs_resource_version=snapshot.resource_version[:64])
        counts.update(collected=0, secrets_collected=0)
        if cluster.health != Cluster.Health.UNHEALTHY:  # as the collector always did: a cluster in doubt is spared
            counts["collected"] = job_services.jobs_collect_cluster(
                cluster=cluster, backend=backend, refs=snapshot.refs, now=now
            )
            try:
                counts["secrets_collected"] = job_services.secrets_collect_cluster(backend=backend, refs=snapshot.refs)
            except BackendError as exc:
                logger.warning("could not list the secrets of cluster %s: %s", cluster.pk, exc)
        for step in CLUSTER_STEPS:
            try:
                merge_counts(counts, step(cluster, backend, snapshot, now))
            except SoftTimeLimitExceeded:
                raise
            except Exception:
                logger.exception("cluster step %s failed on cluster %s", getattr(step, "__name__", step), cluster.pk)
        return counts
    finally:
        if backend is not None:
            backend.close()


def unplaced_tick(*, now: datetime | None = None, advanced: set[int] | None = None) -> dict[str, int]:
    """Advance the live jobs on no cluster: not launched yet (launched here when due) or whose
    cluster was removed (relaunched elsewhere). No cluster is listed for them."""
    now = now or timezone.now()
    advanced = set() if advanced is None else advanced
    counts = _advance_all(list(_live(advanced).filter(cluster__isnull=True)), now, {}, advanced)
    return merge_counts(counts, endpoint_services.endpoints_orphans_step(now))  # endpoints on no cluster
