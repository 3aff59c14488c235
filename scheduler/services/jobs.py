"""Jobs: a renter's work on a booking, from submission to its end.

Lifecycle: ``pending`` (submitted; waiting for the booking's start, or for
its pod) → ``running`` → ``succeeded`` / ``failed`` / ``stopped`` (by the
renter, or at the booking's end) / ``interrupted`` (node lost or pod
evicted, and no equivalent GPU free). ``jobs_tick`` drives it: at the
booking's start it creates one Kubernetes Job per attempt, polls its state,
meters GPU-seconds into the marketplace (idempotent by the Job's UID and the
interval), stops it at the booking's end, and collects any Job of ours that
should not exist. Each step of one job is a cell of the table
``TRANSITIONS`` (what is seen of the job × whether it must stop), and says
what it did as an ``Advance``.

Failover: when a job is interrupted and an equivalent GPU is free (same
model, same or more VRAM, price ≤ the booked price, in the booked region,
or the others too when the renter allowed it (``Job.allow_other_regions``;
the same region still first), the placement engine choosing, with
financing's collateral weights), the booking moves there, the lost time is
refunded pro rata, and the job is resubmitted as its next attempt; its event
and message say "Moved from <host> (<region>) to <host> (<region>) because
<reason>", or that no equivalent GPU was free in the region and the rest was
refunded. The owner's reliability score drops.

Cluster calls happen outside database transactions; an unreachable cluster
marks the cluster unhealthy and leaves every job record as it was, to be
retried on the next tick.
"""

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from core.errors import ConflictError
from marketplace.lock_objects import booking_lock
from marketplace.models import Booking, Listing, Server, UsageRecord
from marketplace.services import bookings as booking_services
from marketplace.services.listings import listing_record_reliability
from scheduler import crypto, engine, placement, selectors
from scheduler.backends import backend_for
from scheduler.backends.base import (
    LABEL_BOOKING,
    LABEL_JOB,
    BackendError,
    ClusterBackend,
    ClusterSnapshot,
    JobRef,
    JobSpec,
    JobState,
    Phase,
)
from scheduler.lock_objects import job_lock
from scheduler.models import Cluster, Job, JobEvent, Node
from scheduler.services import sessions, storage
from scheduler.services.clusters import cluster_mark_unhealthy

logger = logging.getLogger(__name__)

# An image reference: [registry[:port]/]path[:tag][@digest], as the OCI
# distribution spec allows (lower-case path components).
IMAGE_REF = re.compile(
    r"^(?:(?P<registry>[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$"
)
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
JOB_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$")
MAX_ARGS = 64
MAX_ARG_LENGTH = 4096
MAX_ENV = 64
RUNNABLE = Booking.PAID_LIVE
TERMINAL_PHASES = {Phase.SUCCEEDED: Job.Status.SUCCEEDED, Phase.FAILED: Job.Status.FAILED}


def _event(job: Job, at: datetime, kind: str, message: str) -> None:
    JobEvent.objects.create(job=job, at=at, kind=kind, message=message[:500])


def _validate_strings(field: str, values, limit: int) -> list[str]:
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise ValidationError({field: "Give a list of strings."})
    if len(values) > limit or any(len(v) > MAX_ARG_LENGTH for v in values):
        raise ValidationError({field: f"At most {limit} items of {MAX_ARG_LENGTH} characters each."})
    return list(values)


def job_validate(*, image: str, command, args, env, name: str) -> dict[str, str]:
    """Check a job's fields; returns the environment. Values are never echoed back."""
    errors = {}
    if not JOB_NAME.match(name or ""):
        errors["name"] = "Use lower-case letters, digits and hyphens (at most 42), like train-llama."
    if not IMAGE_REF.match(image or "") or len(image) > 400:
        errors["image"] = (
            f"{image!r} is not a valid image reference; use e.g. nvcr.io/nvidia/pytorch:24.05-py3 "
            "or ghcr.io/org/trainer@sha256:<digest>."
        )
    for field, values in (("command", command), ("args", args)):
        try:
            _validate_strings(field, values, MAX_ARGS)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    if not isinstance(env, dict):
        errors["env"] = "Give the environment as NAME=value pairs."
    else:
        bad = sorted(k for k in env if not isinstance(k, str) or not ENV_NAME.match(k))
        if bad:
            errors["env"] = (
                f"Invalid variable name(s): {', '.join(map(str, bad))}. "
                "Names are letters, digits and underscores, not starting with a digit."
            )
        elif len(env) > MAX_ENV or any(not isinstance(v, str) or len(v) > MAX_ARG_LENGTH for v in env.values()):
            errors["env"] = f"At most {MAX_ENV} variables, each value a string of at most {MAX_ARG_LENGTH} characters."
    if errors:
        raise ValidationError(errors)
    return dict(env)


def job_submit(
    *,
    booking: Booking,
    renter: User,
    name: str,
    image: str,
    command=(),
    args=(),
    env=None,
    gpu_count: int,
    ports=(),
    ssh: bool = False,
    registry_credential=None,
    volume=None,
    allow_other_regions: bool = False,
    now: datetime | None = None,
) -> Job:
    """Accept a job for a paid booking; it is launched at the booking's start. ``ports`` (HTTP, as
    ``[{"port": 8888, "label": "JupyterLab"}]``) and ``ssh``: an interactive session (``sessions``).
    ``registry_credential`` (none: the renter's for the image's registry, if any) and ``volume`` (on
    the booked server): see ``storage``; ``allow_other_regions``: failover may leave the booked region."""
    now = now or timezone.now()
    if booking.renter_id != renter.pk:
        raise PermissionDenied("This booking is not yours.")
    errors = {}
    try:
        env = job_validate(image=image, command=command, args=args, env=env or {}, name=name)
    except ValidationError as exc:
        errors = exc.message_dict
    try:
        port_requests = sessions.session_validate(renter=renter, ports=list(ports or ()), ssh=ssh)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    pull = storage.CredentialChoice(None, automatic=False)
    try:
        pull = storage.workload_credential(renter=renter, image=image, credential=registry_credential)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    try:
        volume = storage.job_volume_check(renter=renter, booking=booking, volume=volume)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    with transaction.atomic():
        locked = booking_lock(booking.pk)
        if locked.status not in RUNNABLE or locked.end <= now:
            raise ValidationError(
                {"booking": f"Jobs run on paid bookings with time left; this one is {locked.get_status_display()}."}
            )
        free = locked.gpu_count - selectors.booking_live_gpus(locked.pk)
        if not isinstance(gpu_count, int) or gpu_count < 1 or gpu_count > free:
            errors["gpu_count"] = (
                f"Choose 1 to {free} GPU(s): the booking has {locked.gpu_count}, {free} free of jobs."
                if free
                else "Every GPU of this booking is already used by a running or pending job."
            )
        if errors:
            raise ValidationError(errors)
        job = Job.objects.create(
            booking=locked,
            renter=renter,
            name=name,
            image=image,
            command=list(command),
            args=list(args),
            env_sealed=crypto.seal_json(env) if env else "",
            env_names=sorted(env),
            gpu_count=gpu_count,
            message="Waiting for the booking's start." if locked.start > now else "Starting.",
            registry_credential=pull.credential,
            volume=volume,
            allow_other_regions=bool(allow_other_regions),
        )
        if pull.automatic:
            _event(
                job,
                now,
                "registry",
                f"Pulling with your credential {pull.credential.name} for {pull.credential.registry} "
                "(chosen automatically: you named none).",
            )
        sessions.session_record(job=job, ports=port_requests, ssh=ssh)
        _event(job, now, "submitted", f"{gpu_count} GPU(s), image {image}")
    if booking.start <= now:
        job_advance(job=job, now=now)
        job.refresh_from_db()
    return job


def job_cancel(*, job: Job, renter: User, now: datetime | None = None) -> Job:
    """The renter stops a job; the time it ran is paid, the rest stays in the booking."""
    now = now or timezone.now()
    if job.renter_id != renter.pk:
        raise PermissionDenied("This job is not yours.")
    if not job.live:
        raise ValidationError({"job": f"A {job.get_status_display().lower()} job cannot be cancelled."})
    Job.objects.filter(pk=job.pk).update(stop_requested=True)
    job.refresh_from_db()
    job_advance(job=job, now=now)
    job.refresh_from_db()
    return job


# --- The tick ---------------------------------------------------------------------------


class Advance(StrEnum):
    """What one step of ``job_advance`` did; ``jobs_tick`` counts them by value."""

    WAITING = "waiting"  # no attempt yet: the booking has not started
    NO_NODE = "no-node"  # due, but the booked server has no ready node on a connected cluster
    LAUNCHED = "launched"  # the attempt's Kubernetes Job was created
    UNREACHABLE = "unreachable"  # the cluster did not answer; nothing else changed, the next tick retries
    PENDING = "pending"  # created, no pod running yet
    RUNNING = "running"  # running, and metered
    # Finished: the job's new status (a Job.Status value).
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"  # by the renter, or at the booking's end
    INTERRUPTED = "interrupted"  # lost, with no equivalent GPU free (refunded), or when it had to stop anyway
    FAILOVER = "failover"  # lost; the booking moved to an equivalent GPU and the job was relaunched there
    FAILOVER_PENDING = "failover-pending"  # lost; the booking moved, the relaunch waits for a later tick
    FAILOVER_RETRY = "failover-retry"  # lost; the equivalent GPU was taken meanwhile, the next tick looks again
    ERROR = "error"  # advancing raised (counted by jobs_tick, never returned)


class Seen(StrEnum):
    """What ``job_advance`` sees of a job when no cluster reports on it (otherwise: the attempt's ``Phase``)."""

    NOT_STARTED = "not-started"  # no attempt yet, and the booking has not started
    DUE = "due"  # no attempt yet, and the booking has started
    NO_CLUSTER = "no-cluster"  # the attempt's cluster was removed
    NO_ANSWER = "no-answer"  # the attempt's cluster did not answer


@dataclass(frozen=True)
class _Look:
    """One look at a live job: its rows as read at ``now``, and what its cluster said."""

    job: Job
    booking: Booking
    now: datetime
    must_stop: bool  # cancelled by the renter, or the booking ended or is no longer paid
    backend: ClusterBackend | None = None
    state: JobState | None = None
    error: BackendError | None = None


def jobs_tick(*, now: datetime | None = None) -> dict[str, int]:
    """Periodic, embedded mode: every cluster's tick in turn (``cluster_tick``: one backend, one
    snapshot, its jobs advanced, its strays collected), then the jobs on no cluster. A job is
    advanced once per call, even when a failover moved it to a cluster whose turn comes later."""
    from scheduler.services import cluster_tick as ticks  # it builds on this module

    now = now or timezone.now()
    counts: dict[str, int] = {}
    advanced: set[int] = set()
    for cluster_id in Cluster.objects.order_by("pk").values_list("pk", flat=True):
        try:
            ticks.merge_counts(counts, ticks.cluster_tick(cluster_id=cluster_id, now=now, advanced=advanced))
        except Exception:  # one cluster's failure must not stop the others
            logger.exception("the tick of cluster %s failed", cluster_id)
            counts[Advance.ERROR.value] = counts.get(Advance.ERROR.value, 0) + 1
    ticks.merge_counts(counts, ticks.unplaced_tick(now=now, advanced=advanced))
    counts.setdefault("collected", 0)
    return counts


def job_advance(
    *,
    job: Job,
    now: datetime,
    backend: ClusterBackend | None = None,
    snapshot: ClusterSnapshot | None = None,
    error: BackendError | None = None,
) -> Advance:
    """One step of a live job's life, the one ``TRANSITIONS`` gives for what is seen of it; returns what happened.

    A cluster's tick gives its ``backend`` and ``snapshot`` (or the ``error`` its snapshot raised); alone,
    the job's cluster is asked about this job only, with a backend built and closed here."""
    own = backend is None and snapshot is None and error is None
    booking = Booking.objects.get(pk=job.booking_id)
    seen, look = _look(job, booking, now, backend=backend, snapshot=snapshot, error=error)
    try:
        while_booked, once_stopping = TRANSITIONS[seen]
        return (once_stopping if look.must_stop else while_booked)(look)
    finally:
        if own and look.backend is not None:
            look.backend.close()


def _look(
    job: Job,
    booking: Booking,
    now: datetime,
    *,
    backend: ClusterBackend | None = None,
    snapshot: ClusterSnapshot | None = None,
    error: BackendError | None = None,
) -> tuple[Phase | Seen, _Look]:
    """What is seen of the job: where its booking stands before the first attempt, else its cluster's answer
    (from the tick's ``snapshot`` when given, else read for this job)."""
    must_stop = job.stop_requested or booking.status not in RUNNABLE or now >= booking.end
    if not job.k8s_name:
        return (Seen.NOT_STARTED if booking.start > now else Seen.DUE), _Look(job, booking, now, must_stop)
    if job.cluster is None:
        return Seen.NO_CLUSTER, _Look(job, booking, now, must_stop)
    if error is not None:  # the tick's snapshot of the cluster failed
        return Seen.NO_ANSWER, _Look(job, booking, now, must_stop, backend=backend, error=error)
    backend = backend or backend_for(job.cluster, clock=lambda: now)
    try:
        source = snapshot or backend
        state = source.job_state(job.namespace, job.k8s_name)
        if state.phase == Phase.GONE and snapshot is not None:
            # A snapshot built from a watch may lag the API server by a moment (a Job created just
            # before the watch began can reach it a little later): "gone" is acted on only once a
            # direct read of the Job says so too.
            state = backend.job_state(job.namespace, job.k8s_name)
    except BackendError as exc:
        return Seen.NO_ANSWER, _Look(job, booking, now, must_stop, backend=backend, error=exc)
    _observe(job, state, now)
    return state.phase, _Look(job, booking, now, must_stop, backend=backend, state=state)


# --- The steps: one per cell of TRANSITIONS ----------------------------------------------


def _wait(look: _Look) -> Advance:
    return Advance.WAITING


def _launch_due(look: _Look) -> Advance:
    return _launch(look.job, look.booking, look.now)


def _stop_unlaunched(look: _Look) -> Advance:
    return _finish(look.job, Job.Status.STOPPED, look.now, _stop_reason(look.job, look.booking), at=look.now)


def _replace_removed_cluster(look: _Look) -> Advance:
    return _relaunch_elsewhere(look.job, look.booking, look.now, failed_at=look.now, reason="its cluster was removed")


def _retry_later(look: _Look) -> Advance:
    return _unreachable(look.job, look.job.cluster, look.error, look.now, "The cluster is unreachable")


def _wait_for_pod(look: _Look) -> Advance:
    """Still pending; why (the cluster's scheduler or kubelet refusing the pod) is the renter's to see."""
    if look.state.message:
        message = f"Waiting for the pod: {look.state.message}"[:500]
        if look.job.message != message:
            Job.objects.filter(pk=look.job.pk).update(message=message)
    sessions.session_observe(job=look.job, backend=look.backend)
    return Advance.PENDING


def _run(look: _Look) -> Advance:
    job, state, now = look.job, look.state, look.now
    if job.status != Job.Status.RUNNING:
        Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, message=f"Running on {state.node}.")
        _event(job, state.running_since or now, "running", f"Running on {state.node}")
    _meter(job, now, final=False)
    sessions.session_observe(job=job, backend=look.backend)
    return Advance.RUNNING


def _stop(look: _Look) -> Advance:
    """Stop a pending or running attempt: meter up to now (or the booking's end), then delete its Job."""
    job, booking, now = look.job, look.booking, look.now
    _meter(job, min(now, booking.end), final=True)
    _delete_attempt(look, "job")  # the collector deletes it later if this fails
    listing_record_reliability(server_id=job.server_id, interrupted=False)
    return _finish(job, Job.Status.STOPPED, now, _stop_reason(job, booking), at=min(now, booking.end))


def _end(look: _Look) -> Advance:
    """The attempt ended by itself: succeeded, failed, or stopped by the cluster at the booking's end."""
    job, state, now = look.job, look.state, look.now
    _meter(job, state.finished_at or now, final=True)
    status, message = TERMINAL_PHASES[state.phase], state.message
    if state.phase == Phase.FAILED and state.message == "DeadlineExceeded":
        # The booking's end, enforced by the cluster (activeDeadlineSeconds).
        status, message = Job.Status.STOPPED, "The booking ended."
    listing_record_reliability(server_id=job.server_id, interrupted=False)
    return _finish(job, status, now, message or status.label, at=state.finished_at or now)


def _fail_over(look: _Look) -> Advance:
    reason = _clear_lost(look)
    return _relaunch_elsewhere(
        look.job, look.booking, look.now, failed_at=look.state.finished_at or look.now, reason=reason
    )


def _end_interrupted(look: _Look) -> Advance:
    reason = _clear_lost(look)
    at = look.state.finished_at or look.now
    return _finish(look.job, Job.Status.INTERRUPTED, look.now, f"Interrupted: {reason}", at=at)


Step = Callable[[_Look], Advance]

# The job's life as a table: what is seen of it → the step while its booking runs, and the step once it
# must stop (cancelled by the renter, the booking ended or is no longer paid).
TRANSITIONS: dict[Phase | Seen, tuple[Step, Step]] = {
    # seen: (while booked, once it must stop)
    Seen.NOT_STARTED: (_wait, _stop_unlaunched),
    Seen.DUE: (_launch_due, _stop_unlaunched),
    Seen.NO_CLUSTER: (_replace_removed_cluster, _replace_removed_cluster),
    Seen.NO_ANSWER: (_retry_later, _retry_later),
    Phase.PENDING: (_wait_for_pod, _stop),
    Phase.RUNNING: (_run, _stop),
    Phase.SUCCEEDED: (_end, _end),
    Phase.FAILED: (_end, _end),
    Phase.INTERRUPTED: (_fail_over, _end_interrupted),
    Phase.GONE: (_fail_over, _end_interrupted),
}


# --- What the steps share ------------------------------------------------------------------


def _stop_reason(job: Job, booking: Booking) -> str:
    if job.stop_requested:
        return "Cancelled by the renter."
    if booking.status not in RUNNABLE:
        return f"The booking is {booking.get_status_display().lower()}."
    return "The booking ended."


def _finish(job: Job, status: Job.Status, now: datetime, message: str, *, at: datetime) -> Advance:
    """End the job in ``status``; the outcome is that status."""
    Job.objects.filter(pk=job.pk).update(status=status, message=message[:500], finished_at=at)
    _event(job, now, status, message)
    return Advance(status.value)


def _unreachable(job: Job, cluster: Cluster, error: BackendError, now: datetime, message: str) -> Advance:
    """Mark the cluster unhealthy and say so on the job; nothing else changes, the next tick retries."""
    cluster_mark_unhealthy(cluster=cluster, error=error, now=now)
    Job.objects.filter(pk=job.pk).update(message=f"{message}; retrying. ({error})"[:500])
    return Advance.UNREACHABLE


def _delete_attempt(look: _Look, what: str) -> None:
    try:
        look.backend.delete_job(look.job.namespace, look.job.k8s_name)
    except BackendError as exc:
        logger.warning("could not delete %s %s yet: %s", what, look.job.k8s_name, exc)


def _clear_lost(look: _Look) -> str:
    """A lost attempt (pod evicted, node lost, Job gone): meter what it ran, delete what is left; returns why."""
    state = look.state
    _meter(look.job, state.finished_at or look.now, final=True)
    _delete_attempt(look, "interrupted job")
    return state.message or ("the Job disappeared from the cluster" if state.phase == Phase.GONE else "")


def _observe(job: Job, state: JobState, now: datetime) -> None:
    if state.running_since and job.running_since != state.running_since:
        Job.objects.filter(pk=job.pk).update(running_since=state.running_since)
        job.running_since = state.running_since


def _meter(job: Job, until: datetime, *, final: bool) -> int:
    """Report GPU-seconds run since the last report, up to ``until``.

    The interval starts at the pod's running start (or the last report) and
    ends at ``until``, both inside the booking's window, in whole seconds.
    Reports come at most every ``SCHEDULER_METER_SECONDS`` while running, and
    at the end. The usage key is the Job's UID and the interval, so a replay
    of the same report is recorded once. The job is locked (its booking with
    it) before the marketplace records the usage: Job before Booking, as
    ``core/locks.py`` orders them.
    """
    with transaction.atomic():
        locked = job_lock(job.pk)
        if not locked.running_since or not locked.k8s_uid:
            return 0
        booking = locked.booking
        start = max(locked.metered_until or locked.running_since, locked.running_since, booking.start)
        end = min(until, booking.end)
        seconds = int((end - start).total_seconds())
        if seconds <= 0 or (not final and seconds < settings.SCHEDULER_METER_SECONDS):
            return 0
        end = start + timedelta(seconds=seconds)
        gpu_seconds = seconds * locked.gpu_count
        key = f"job:{locked.k8s_uid}:{int(start.timestamp())}-{int(end.timestamp())}"
        if UsageRecord.objects.filter(key=key).exists():  # reported before: a replay
            gpu_seconds = 0
        booking_services.booking_record_usage(
            booking=booking,
            key=key,
            interval_start=start,
            interval_end=end,
            gpu_seconds=gpu_seconds,
        )
        locked.metered_until = end
        locked.gpu_seconds = locked.gpu_seconds + gpu_seconds
        locked.save(update_fields=["metered_until", "gpu_seconds"])
    job.metered_until, job.gpu_seconds = locked.metered_until, locked.gpu_seconds
    return gpu_seconds


def _namespace(job: Job) -> str:
    return f"infrafi-renter-{job.renter_id}"


def _share(booking: Booking, gpu_count: int) -> tuple[int, int]:
    """(millicores, MiB) that a pod using ``gpu_count`` of the booking's GPUs may request: its part
    of the CPU and memory the booking took (``Booking.cpu_milli``/``memory_mib``, the listing's
    share or the renter's minimum), ``gpu_count`` ÷ the booking's GPUs of it, rounded down, so the
    jobs and endpoints of one booking never ask for more than its share. A booking without a share
    (0: made before shares existed) gets the even split of its server, as before.

    Capped at the same part of its node's allocatable (as node sync last read it; 0 = not reported):
    a server declared bigger than its node would otherwise ask for a pod no scheduler can place."""
    server = Server.objects.get(pk=booking.server_id)
    gpus = max(1, server.gpus.count())
    booked = max(1, booking.gpu_count)
    cpu = (booking.cpu_milli * gpu_count // booked) if booking.cpu_milli else (server.cpu_milli * gpu_count // gpus)
    memory = (
        (booking.memory_mib * gpu_count // booked) if booking.memory_mib else (server.memory_mib * gpu_count // gpus)
    )
    node = Node.objects.filter(server=server).first()
    if node is not None:
        node_gpus = max(1, node.gpu_allocatable or gpus)
        if node.cpu_allocatable_milli:
            cpu = min(cpu, node.cpu_allocatable_milli * gpu_count // node_gpus)
        if node.memory_allocatable_mib:
            memory = min(memory, node.memory_allocatable_mib * gpu_count // node_gpus)
    return cpu, memory


def _launch(job: Job, booking: Booking, now: datetime) -> Advance:
    """Create the next attempt's Kubernetes Job on the node behind the booking's server."""
    node = selectors.ready_node_for_server(booking.server_id)
    if node is None:
        Job.objects.filter(pk=job.pk).update(
            message="Waiting: the booked server has no ready node on a connected cluster."
        )
        return Advance.NO_NODE
    attempt = job.attempt + 1
    cpu_milli, memory_mib = _share(booking, job.gpu_count)
    spec = JobSpec(
        name=f"infrafi-{job.public_id.hex[:12]}-{attempt}",
        namespace=_namespace(job),
        node=node.hostname,
        image=job.image,
        command=list(job.command),
        env=crypto.unseal_json(job.env_sealed),
        gpu_count=job.gpu_count,
        active_deadline_seconds=max(1, int((booking.end - now).total_seconds())),
        labels={LABEL_BOOKING: str(booking.public_id), LABEL_JOB: str(job.public_id)},
        ttl_seconds_after_finished=settings.SCHEDULER_JOB_TTL_SECONDS,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
        **sessions.session_spec_fields(job),  # args ({base_url} filled in), HTTP ports, SSH keys
    )
    backend = backend_for(node.cluster, clock=lambda: now)
    try:
        backend.ensure_namespace(spec.namespace)
        spec = replace(
            spec,
            **storage.job_storage_prepare(
                job=job, backend=backend, namespace=spec.namespace, server_id=booking.server_id, now=now
            ),
        )
        state = backend.create_job(spec)
        sessions.session_launch(job=job, spec=spec, job_uid=state.uid, backend=backend, cluster=node.cluster)
    except BackendError as exc:
        return _unreachable(job, node.cluster, exc, now, "Could not reach the cluster")
    Job.objects.filter(pk=job.pk).update(
        cluster=node.cluster,
        server_id=booking.server_id,
        node_name=node.hostname,
        namespace=spec.namespace,
        k8s_name=spec.name,
        k8s_uid=state.uid,
        attempt=attempt,
        submitted_at=now,
        running_since=None,
        metered_until=None,
        # A failover's "Moved from ... because ..." (storage helper) stays in front until the pod runs.
        message=(f"{job.message} " if job.message.startswith("Moved from ") else "")
        + f"Created on {node.hostname}; waiting for the pod.",
    )
    _event(job, now, "created", f"Attempt {attempt}: Job {spec.name} on {node.hostname} ({node.cluster.name})")
    job.refresh_from_db()
    return Advance.LAUNCHED


def _relaunch_elsewhere(job: Job, booking: Booking, now: datetime, *, failed_at: datetime, reason: str) -> Advance:
    """Interrupted: fail over to an equivalent GPU if one is free, refund the lost time.

    The bookkeeping — the job interrupted, the booking moved, the lost time refunded, the job
    back to pending — is one transaction: a crash anywhere in it leaves the job live, and the
    next tick fails it over again. Only the failure's moment is committed first (as the live
    job's ``finished_at``), so the retry refunds from when it failed, not from when it retried."""
    failed_at = job.finished_at or failed_at  # noted by an earlier try that did not get through
    Job.objects.filter(pk=job.pk).update(finished_at=failed_at)
    with transaction.atomic():
        job_lock(job.pk)  # Job before Booking (core/locks.py)
        advance = _fail_over_books(job, booking, now, failed_at=failed_at, reason=reason)
    if advance is not None:
        return advance
    job.refresh_from_db()
    booking.refresh_from_db()
    return Advance.FAILOVER if _launch(job, booking, now) == Advance.LAUNCHED else Advance.FAILOVER_PENDING


def _fail_over_books(job: Job, booking: Booking, now: datetime, *, failed_at: datetime, reason: str) -> Advance | None:
    """The failover's bookkeeping (in the caller's transaction); None when the job is to be resubmitted."""
    _event(job, failed_at, "interrupted", f"Interrupted on {job.node_name or 'its node'}: {reason}")
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.INTERRUPTED, message=f"Interrupted: {reason}"[:500], finished_at=failed_at
    )
    failed_server = job.server_id
    if booking.server_id == failed_server:
        listing_record_reliability(server_id=failed_server, interrupted=True)
        booked = Listing.objects.select_related("region", "server").get(pk=booking.listing_id)
        target = _equivalent_listing(booking, now, allow_other_regions=job.allow_other_regions)
        key = f"server-{failed_server}"  # one refund per failure of a server under this booking
        if target is None:
            booking_services.booking_interrupt(booking=booking, failed_at=failed_at, resumed_at=None, key=key)
            message = (
                "Interrupted; no equivalent GPU is free, so the booking's remaining time was refunded."
                if job.allow_other_regions
                else f"No equivalent GPU in {booked.region.name}; other regions were not allowed, "
                "so the remaining time was refunded."
            )
            Job.objects.filter(pk=job.pk).update(message=message)
            _event(job, now, "refunded", message)
            return Advance.INTERRUPTED
        try:
            booking_services.booking_move(booking=booking, listing=target, at=now)
        except (ConflictError, ValidationError) as exc:  # taken meanwhile: the next tick tries again
            logger.info("failover of booking %s to listing %s lost a race: %s", booking.public_id, target.pk, exc)
            Job.objects.filter(pk=job.pk).update(status=Job.Status.PENDING, message="Looking for a replacement GPU.")
            return Advance.FAILOVER_RETRY
        booking_services.booking_interrupt(booking=booking, failed_at=failed_at, resumed_at=now, key=key)
        moved = (
            f"Moved from {booked.server.hostname} ({booked.region.name}) to {target.server.hostname} "
            f"({target.region.name}) because {reason or 'its node was lost'}."
        )
        _event(job, now, "failover", moved)
        Job.objects.filter(pk=job.pk).update(
            status=Job.Status.PENDING, finished_at=None, k8s_name="", k8s_uid="", message=moved[:500]
        )
        return None
    # The booking now runs elsewhere (moved by a sibling): resubmit there.
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.PENDING, finished_at=None, k8s_name="", k8s_uid="", message="Resubmitting."
    )
    return None


def _equivalent_listing(booking: Booking, now: datetime, *, allow_other_regions: bool = False) -> Listing | None:
    """Same model, same or more VRAM, no dearer, at least the booking's CPU and memory share, in the booked
    region (same region first, then the others, when the renter allowed them); the placement engine
    decides, with the failed server excluded (its options are verified free for [now, booking.end))."""
    listing = Listing.objects.select_related("gpu_model", "region").get(pk=booking.listing_id)
    start = now.replace(second=0, microsecond=0)
    if booking.end - start < timedelta(minutes=1):
        return None
    request = placement.Request(
        gpu_count=booking.gpu_count,
        models=frozenset({listing.gpu_model.name}),
        min_vram_gb=listing.vram_gb or 0,
        price_cap=booking.price_per_gpu_hour,
        region=listing.region.code,
        cpu_milli=booking.cpu_milli,
        memory_mib=booking.memory_mib,
    )
    for candidate in engine.placement_options(request, start=start, end=booking.end, k=3, exclude={booking.server_id}):
        if allow_other_regions or candidate.region == listing.region.code:
            return candidate.listing
    return None


# --- Garbage collection -----------------------------------------------------------------


def jobs_collect(*, now: datetime | None = None) -> int:
    """Delete every Job of ours that should not exist: unknown, finished, a stale
    attempt, or past its booking's end. No Job outlives its booking."""
    now = now or timezone.now()
    deleted = 0
    for cluster in Cluster.objects.exclude(health=Cluster.Health.UNHEALTHY):
        backend = backend_for(cluster, clock=lambda: now)
        try:
            refs = backend.list_jobs()
        except BackendError as exc:
            cluster_mark_unhealthy(cluster=cluster, error=exc, now=now)
            backend.close()
            continue
        try:
            deleted += jobs_collect_cluster(cluster=cluster, backend=backend, refs=refs, now=now)
        finally:
            backend.close()
    return deleted


def jobs_collect_cluster(*, cluster: Cluster, backend: ClusterBackend, refs: list[JobRef], now: datetime) -> int:
    """The collector on one cluster, from its list of our Jobs (``refs``, e.g. a tick's snapshot's).

    A Job whose launch is in flight (created, its job's row not yet updated: live, no ``k8s_name``, and
    the name its next attempt gets) is kept: the launch adopts it, or retries under the same name."""
    deleted = 0
    jobs = _jobs_named_by(refs)
    for ref in refs:
        job = jobs.get(ref.labels.get(LABEL_JOB, ""))
        keep = (
            job is not None
            and _attempt_of(job, ref.name)
            and (job.cluster_id == cluster.pk or not job.k8s_name)
            and job.booking.end > now
        )
        if keep:
            continue
        try:
            backend.delete_job(ref.namespace, ref.name)
            deleted += 1
        except BackendError as exc:
            logger.warning("could not collect job %s/%s: %s", ref.namespace, ref.name, exc)
    return deleted


# The env Secret of a Job is named <job>-env (``kubernetes.env_secret_name``).
ENV_SECRET_SUFFIX = "-env"


def secrets_collect_cluster(*, backend: ClusterBackend, refs: list[JobRef]) -> int:
    """Delete the env Secrets (``<job>-env``, labelled with their job) whose Job is gone: the cluster's
    garbage collector may lag, or the Job was deleted by hand. ``refs`` are our Jobs, listed before the
    Secrets; a Secret whose job's row still names that attempt (or is about to: its launch in flight)
    is kept, since its Job may have been created after the list."""
    secrets = [
        s for s in backend.list_secrets() if s.name.endswith(ENV_SECRET_SUFFIX) and _is_uuid(s.labels.get(LABEL_JOB))
    ]
    existing = {(ref.namespace, ref.name) for ref in refs}
    jobs = _jobs_named_by(secrets)
    deleted = 0
    for secret in secrets:
        job_name = secret.name.removesuffix(ENV_SECRET_SUFFIX)
        job = jobs.get(secret.labels[LABEL_JOB])
        if (secret.namespace, job_name) in existing or (job is not None and _attempt_of(job, job_name)):
            continue
        try:
            backend.delete_secret(secret.namespace, secret.name)
            deleted += 1
        except BackendError as exc:
            logger.warning("could not collect secret %s/%s: %s", secret.namespace, secret.name, exc)
    return deleted


def _jobs_named_by(refs) -> dict[str, Job]:
    """The job rows the ``infrafi.io/job`` labels of ``refs`` name, by public id."""
    ids = [i for i in {ref.labels.get(LABEL_JOB) for ref in refs} if _is_uuid(i)]
    return {str(j.public_id): j for j in Job.objects.filter(public_id__in=ids).select_related("booking")}


def _attempt_of(job: Job, name: str) -> bool:
    """Whether the Kubernetes Job ``name`` is the live job's current attempt, or its next one being launched."""
    if not job.live:
        return False
    if job.k8s_name:
        return job.k8s_name == name
    return name == f"infrafi-{job.public_id.hex[:12]}-{job.attempt + 1}"


def _is_uuid(value) -> bool:
    return isinstance(value, str) and re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", value
    )


def job_logs(*, job: Job, lines: int = 100, now: datetime | None = None) -> str:
    """The tail of the current attempt's log ("" when there is none or the cluster is unreachable)."""
    if not job.k8s_name or job.cluster is None:
        return ""
    try:
        return backend_for(job.cluster, clock=lambda: now or timezone.now()).logs_tail(
            job.namespace, job.k8s_name, lines
        )
    except BackendError as exc:
        return f"(logs unavailable: {exc})"
