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
model, same or more VRAM, price ≤ the booked price, same region first, the
placement engine choosing, with financing's collateral weights), the
booking moves there, the lost time is refunded pro rata, and the job is
resubmitted as its next attempt. The owner's reliability score drops.

Cluster calls happen outside database transactions; an unreachable cluster
marks the cluster unhealthy and leaves every job record as it was, to be
retried on the next tick.
"""

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
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
from scheduler import crypto, placement, selectors
from scheduler.backends import backend_for
from scheduler.backends.base import (
    LABEL_BOOKING,
    LABEL_JOB,
    BackendError,
    ClusterBackend,
    JobSpec,
    JobState,
    Phase,
)
from scheduler.lock_objects import job_lock
from scheduler.models import Cluster, Job, JobEvent
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
    now: datetime | None = None,
) -> Job:
    """Accept a job for a paid booking; it is launched at the booking's start."""
    now = now or timezone.now()
    if booking.renter_id != renter.pk:
        raise PermissionDenied("This booking is not yours.")
    errors = {}
    try:
        env = job_validate(image=image, command=command, args=args, env=env or {}, name=name)
    except ValidationError as exc:
        errors = exc.message_dict
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
        )
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
    """Periodic: advance every live job, then collect stray Jobs on every cluster."""
    now = now or timezone.now()
    counts: dict[str, int] = {}
    for job in Job.objects.filter(status__in=Job.LIVE).select_related("booking", "cluster").order_by("pk"):
        try:
            outcome = job_advance(job=job, now=now)
        except Exception:  # one job's failure must not stop the others
            logger.exception("advancing job %s failed", job.public_id)
            outcome = Advance.ERROR
        counts[outcome.value] = counts.get(outcome.value, 0) + 1
    counts["collected"] = jobs_collect(now=now)
    return counts


def job_advance(*, job: Job, now: datetime) -> Advance:
    """One step of a live job's life, the one ``TRANSITIONS`` gives for what is seen of it; returns what happened."""
    seen, look = _look(job, Booking.objects.get(pk=job.booking_id), now)
    while_booked, once_stopping = TRANSITIONS[seen]
    return (once_stopping if look.must_stop else while_booked)(look)


def _look(job: Job, booking: Booking, now: datetime) -> tuple[Phase | Seen, _Look]:
    """What is seen of the job: where its booking stands before the first attempt, else its cluster's answer."""
    must_stop = job.stop_requested or booking.status not in RUNNABLE or now >= booking.end
    if not job.k8s_name:
        return (Seen.NOT_STARTED if booking.start > now else Seen.DUE), _Look(job, booking, now, must_stop)
    if job.cluster is None:
        return Seen.NO_CLUSTER, _Look(job, booking, now, must_stop)
    backend = backend_for(job.cluster, clock=lambda: now)
    try:
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
    return Advance.PENDING


def _run(look: _Look) -> Advance:
    job, state, now = look.job, look.state, look.now
    if job.status != Job.Status.RUNNING:
        Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING, message=f"Running on {state.node}.")
        _event(job, state.running_since or now, "running", f"Running on {state.node}")
    _meter(job, now, final=False)
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


def _share(server: Server, gpu_count: int) -> tuple[int, int]:
    """(millicores, MiB) of the server that ``gpu_count`` of its GPUs bring: its CPU and memory split
    evenly over all its GPUs, rounded down, so the jobs on one server never ask for more than it has."""
    gpus = max(1, server.gpus.count())
    return server.cpu_milli * gpu_count // gpus, server.memory_mib * gpu_count // gpus


def _launch(job: Job, booking: Booking, now: datetime) -> Advance:
    """Create the next attempt's Kubernetes Job on the node behind the booking's server."""
    node = selectors.ready_node_for_server(booking.server_id)
    if node is None:
        Job.objects.filter(pk=job.pk).update(
            message="Waiting: the booked server has no ready node on a connected cluster."
        )
        return Advance.NO_NODE
    attempt = job.attempt + 1
    cpu_milli, memory_mib = _share(Server.objects.get(pk=booking.server_id), job.gpu_count)
    spec = JobSpec(
        name=f"infrafi-{job.public_id.hex[:12]}-{attempt}",
        namespace=_namespace(job),
        node=node.hostname,
        image=job.image,
        command=list(job.command),
        args=list(job.args),
        env=crypto.unseal_json(job.env_sealed),
        gpu_count=job.gpu_count,
        active_deadline_seconds=max(1, int((booking.end - now).total_seconds())),
        labels={LABEL_BOOKING: str(booking.public_id), LABEL_JOB: str(job.public_id)},
        ttl_seconds_after_finished=settings.SCHEDULER_JOB_TTL_SECONDS,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
    )
    backend = backend_for(node.cluster, clock=lambda: now)
    try:
        backend.ensure_namespace(spec.namespace)
        state = backend.create_job(spec)
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
        message=f"Created on {node.hostname}; waiting for the pod.",
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
        target = _equivalent_listing(booking, now)
        key = f"server-{failed_server}"  # one refund per failure of a server under this booking
        if target is None:
            booking_services.booking_interrupt(booking=booking, failed_at=failed_at, resumed_at=None, key=key)
            message = "Interrupted; no equivalent GPU is free, so the booking's remaining time was refunded."
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
        _event(job, now, "failover", f"Re-booked on {target.server.hostname} ({target.region.name})")
    # The booking now runs elsewhere (moved by this job or a sibling): resubmit there.
    Job.objects.filter(pk=job.pk).update(
        status=Job.Status.PENDING, finished_at=None, k8s_name="", k8s_uid="", message="Resubmitting."
    )
    return None


def _equivalent_listing(booking: Booking, now: datetime) -> Listing | None:
    """Same model, same or more VRAM, no dearer, same region first; placement decides."""
    listing = Listing.objects.select_related("gpu_model", "region").get(pk=booking.listing_id)
    start = now.replace(second=0, microsecond=0)
    if booking.end - start < timedelta(minutes=1):
        return None
    nodes, free, by_server = selectors.placement_candidates(
        gpu_count=booking.gpu_count,
        gpu_model_ids=(listing.gpu_model_id,),
        min_vram_gb=listing.vram_gb,
        price_cap=booking.price_per_gpu_hour,
        start=start,
        end=booking.end,
        exclude_server_id=booking.server_id,
    )
    request = placement.Request(
        gpu_count=booking.gpu_count,
        models=frozenset({listing.gpu_model.name}),
        min_vram_gb=listing.vram_gb or 0,
        price_cap=booking.price_per_gpu_hour,
        region=listing.region.code,
    )
    chosen = placement.choose(request, nodes, free, policy="ours", weights=selectors.collateral_weights(by_server))
    return by_server.get(chosen) if chosen is not None else None


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
            continue
        ids = {ref.labels.get(LABEL_JOB) for ref in refs}
        jobs = {
            str(j.public_id): j
            for j in Job.objects.filter(public_id__in=[i for i in ids if _is_uuid(i)]).select_related("booking")
        }
        for ref in refs:
            job = jobs.get(ref.labels.get(LABEL_JOB, ""))
            keep = (
                job is not None
                and job.live
                and job.k8s_name == ref.name
                and job.cluster_id == cluster.pk
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
