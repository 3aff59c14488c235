"""Inference endpoints: a renter's model server on a booking, from creation to its end.

An ``Endpoint`` is a Deployment (``replicas`` pods of ``gpus_per_replica`` GPUs each, pinned to the
booked server's node, with the same pod spec as a job: ``kubernetes.pod_spec``) behind a ClusterIP
Service of the same name, each replica ready when ``readiness_path`` answers on ``port``. The
platform's proxy serves it at ``/endpoints/<public_id>/`` to the renter's API token.

Lifecycle (``Endpoint.Status``): ``pending`` (created; waiting for the booking's start, then for its
first ready replica) → ``ready`` (every replica ready) / ``degraded`` (fewer, after having been
ready) → ``stopped`` (by the renter, at the booking's end, or when the booking is no longer paid) /
``failed`` (its cluster was removed). ``endpoints_cluster_step`` drives one cluster's endpoints per
tick, from that cluster's snapshot when there is one: it launches due endpoints (env Secret,
Deployment, Service), reads each Deployment's state, rolls the image when the renter changed it,
meters, and stops and deletes what must stop; then it collects Deployments of ours that should not
exist. ``endpoints_tick`` runs it for every cluster, and settles endpoints no cluster holds.

Jobs and endpoints share the booking's GPUs: ``selectors.booking_live_gpus`` counts both.

Metering: the ready replicas seen at a tick count for the whole interval since the previous tick
(``metered_until``): ``ready × gpus_per_replica × seconds`` GPU-seconds, also kept as
``ready_replica_seconds`` (replicas × seconds). A replica that became ready just before a tick is
thus counted from the previous tick, one that stopped being ready just before it is not counted for
that interval: the error is at most one tick per change, both ways. The GPU-seconds are reported to
the marketplace (``booking_record_usage``, the jobs' usage and invoice path) every
``SCHEDULER_METER_SECONDS`` and at the end, keyed by the endpoint and the interval, so a replay is
recorded once; the interval never leaves the booking's window. Each metering step is a
compare-and-set on ``metered_until`` / ``reported_until`` in one transaction, so two ticks cannot
count the same interval twice.

Cluster calls happen outside database transactions. An unreachable cluster marks the cluster
unhealthy and leaves the endpoint's row as it was; the next tick retries (a stop included).
Nothing is created on a cluster before the input is validated.

Storage (as a job's, ``scheduler.services.storage``): a private image is pulled with the renter's
registry credential (named, or picked for the image's registry), as the Secret ``<name>-pull``
made before the Deployment, owned by it and deleted with it at stop; the renter's volume on the
booked server is mounted at ``/workspace`` in every replica (a ReadWriteOnce PVC: the replicas
share it because they are all pinned to that server's one node). Rolling to an image of another
registry than the credential's is refused.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import User
from marketplace.lock_objects import booking_lock
from marketplace.models import Booking
from marketplace.services import bookings as booking_services
from scheduler import crypto, selectors
from scheduler.backends import backend_for
from scheduler.backends.base import (
    LABEL_BOOKING,
    LABEL_ENDPOINT,
    BackendError,
    ClusterBackend,
    ClusterSnapshot,
    DeploymentState,
    EndpointSpec,
    JobSpec,
)
from scheduler.models import Cluster, Endpoint
from scheduler.services import storage
from scheduler.services.clusters import cluster_mark_unhealthy
from scheduler.services.jobs import RUNNABLE, _share, job_validate

logger = logging.getLogger(__name__)

MAX_REPLICAS = 16
# An absolute URL path (RFC 3986 pchar and "/"), no query.
READINESS_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,199}$")


def _k8s_name(endpoint: Endpoint) -> str:
    """The Deployment's and Service's name: a DNS-1035 label (a Service name must start with a letter)."""
    return f"ep-{endpoint.name}-{endpoint.public_id.hex[:6]}"


def _namespace(endpoint: Endpoint) -> str:
    return f"infrafi-renter-{endpoint.renter_id}"


def _positive_int(value, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


# --- The renter's actions --------------------------------------------------------------------


def endpoint_create(
    *,
    booking: Booking,
    renter: User,
    name: str,
    image: str,
    command=(),
    args=(),
    env=None,
    port: int = 8000,
    readiness_path: str = "/health",
    replicas: int = 1,
    gpus_per_replica: int = 1,
    registry_credential=None,
    volume=None,
    now: datetime | None = None,
) -> Endpoint:
    """Accept an endpoint for a paid booking with time left; it is launched at the booking's start
    (at once when it has started). Replicas × GPUs each must fit the booking's GPUs not taken by its
    live jobs and endpoints. ``registry_credential`` (an id or the object; none: the renter's for the
    image's registry, if any) and ``volume`` (the renter's, on the booked server): see ``storage``."""
    now = now or timezone.now()
    if booking.renter_id != renter.pk:
        raise PermissionDenied("This booking is not yours.")
    errors: dict[str, list[str]] = {}
    try:
        env = job_validate(image=image, command=command, args=args, env=env or {}, name=name)
    except ValidationError as exc:
        errors = dict(exc.message_dict)
    if not _positive_int(port, 1, 65535):
        errors["port"] = ["Give the port the server listens on, 1-65535."]
    if not isinstance(readiness_path, str) or not READINESS_PATH.match(readiness_path):
        errors["readiness_path"] = ["Give an absolute path such as /health (at most 200 characters, no query)."]
    if not _positive_int(replicas, 1, MAX_REPLICAS):
        errors["replicas"] = [f"Choose 1 to {MAX_REPLICAS} replicas."]
    if not _positive_int(gpus_per_replica, 1, 64):
        errors["gpus_per_replica"] = ["Choose at least 1 GPU per replica."]
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
                {
                    "booking": "Endpoints run on paid bookings with time left; "
                    f"this one is {locked.get_status_display()}."
                }
            )
        free = locked.gpu_count - selectors.booking_live_gpus(locked.pk)
        if "replicas" not in errors and "gpus_per_replica" not in errors and replicas * gpus_per_replica > free:
            errors["replicas"] = [
                f"{replicas} replica(s) × {gpus_per_replica} GPU(s) need {replicas * gpus_per_replica} GPUs; "
                f"the booking has {locked.gpu_count}, {free} not used by its jobs and endpoints."
            ]
        if errors:
            raise ValidationError(errors)
        endpoint = Endpoint.objects.create(
            booking=locked,
            renter=renter,
            name=name,
            image=image,
            command=list(command),
            args=list(args),
            env_sealed=crypto.seal_json(env) if env else "",
            env_names=sorted(env),
            port=port,
            readiness_path=readiness_path,
            replicas=replicas,
            gpus_per_replica=gpus_per_replica,
            registry_credential=pull.credential,
            volume=volume,
            message=("Waiting for the booking's start." if locked.start > now else "Starting.")
            + (
                f" Pulling with your credential {pull.credential.name} for {pull.credential.registry}"
                " (chosen automatically: you named none)."
                if pull.automatic
                else ""
            ),
        )
    if locked.start <= now:
        endpoint_advance(endpoint=endpoint, now=now)
        endpoint.refresh_from_db()
    return endpoint


def endpoint_update_image(*, endpoint: Endpoint, renter: User, image: str, now: datetime | None = None) -> Endpoint:
    """Change the image: the Deployment rolls its replicas one at a time (see ``kubernetes.deployment_manifest``
    for why no surge pod). The new image is the desired state: when the cluster does not answer now,
    the next tick patches it."""
    now = now or timezone.now()
    if endpoint.renter_id != renter.pk:
        raise PermissionDenied("This endpoint is not yours.")
    if not endpoint.live:
        raise ValidationError({"image": f"A {endpoint.get_status_display().lower()} endpoint cannot change."})
    try:
        job_validate(image=image, command=[], args=[], env={}, name=endpoint.name)
    except ValidationError as exc:
        raise ValidationError({"image": exc.message_dict.get("image", exc.messages)}) from None
    if image == endpoint.image:
        return endpoint
    credential = endpoint.registry_credential
    if credential is not None and storage.image_registry(image) != credential.registry:
        raise ValidationError(
            {
                "image": f"This endpoint pulls with your credential {credential.name} for {credential.registry}; "
                f"{image} is pulled from {storage.image_registry(image)}. Choose an image from "
                f"{credential.registry}, or create a new endpoint."
            }
        )
    Endpoint.objects.filter(pk=endpoint.pk).update(image=image, message=f"Rolling to {image}.")
    endpoint.refresh_from_db()
    if endpoint.k8s_name and endpoint.cluster is not None:
        backend = backend_for(endpoint.cluster, clock=lambda: now)
        try:
            backend.set_deployment_image(endpoint.namespace, endpoint.k8s_name, image)
        except BackendError as exc:
            logger.info("endpoint %s: image change deferred to the next tick: %s", endpoint.public_id, exc)
        finally:
            _close(backend)
    return endpoint


def endpoint_stop(*, endpoint: Endpoint, renter: User, now: datetime | None = None) -> Endpoint:
    """The renter stops the endpoint: its ready time so far is billed, the rest of the booking stays theirs."""
    now = now or timezone.now()
    if endpoint.renter_id != renter.pk:
        raise PermissionDenied("This endpoint is not yours.")
    if not endpoint.live:
        raise ValidationError({"endpoint": f"A {endpoint.get_status_display().lower()} endpoint cannot be stopped."})
    Endpoint.objects.filter(pk=endpoint.pk).update(stop_requested=True)
    endpoint.refresh_from_db()
    endpoint_advance(endpoint=endpoint, now=now)
    endpoint.refresh_from_db()
    return endpoint


# --- The tick ----------------------------------------------------------------------------------


def endpoints_tick(*, now: datetime | None = None) -> dict[str, int]:
    """Periodic: every cluster's endpoints (one backend per cluster, closed after), then the endpoints
    no cluster holds (not launched and no node, or their cluster removed)."""
    now = now or timezone.now()
    counts: dict[str, int] = {}
    for cluster in Cluster.objects.order_by("pk"):
        backend = backend_for(cluster, clock=lambda: now)
        try:
            _add(counts, endpoints_cluster_step(cluster, backend, None, now))
        finally:
            _close(backend)
    _add(counts, endpoints_orphans_step(now))
    return counts


def endpoints_cluster_step(
    cluster: Cluster, backend: ClusterBackend, snapshot: ClusterSnapshot | None, now: datetime
) -> dict[str, int]:
    """One cluster's tick for endpoints: advance the live endpoints on it (and those due to launch on
    one of its nodes), then collect Deployments of ours it should not have. Uses ``snapshot`` (the
    cluster's state read once at the start of its tick) where it has the Deployment. Counts are keyed
    ``endpoints-<outcome>`` (``endpoints-ready``, ``endpoints-stopped``, ``endpoints-collected``...),
    apart from the jobs' counts of the same tick. Registered in ``cluster_tick.CLUSTER_STEPS``."""
    counts: dict[str, int] = {}
    live = Endpoint.objects.filter(status__in=Endpoint.LIVE).select_related("cluster").order_by("pk")
    mine = list(live.filter(cluster=cluster)) + list(
        live.filter(cluster__isnull=True, k8s_name="", booking__server__cluster_node__cluster=cluster)
    )
    for endpoint in mine:
        try:
            outcome = endpoint_advance(endpoint=endpoint, now=now, cluster=cluster, backend=backend, snapshot=snapshot)
        except Exception:  # one endpoint's failure must not stop the others
            logger.exception("advancing endpoint %s failed", endpoint.public_id)
            outcome = "error"
        counts[f"endpoints-{outcome}"] = counts.get(f"endpoints-{outcome}", 0) + 1
    if cluster.health != Cluster.Health.UNHEALTHY:
        counts["endpoints-collected"] = _collect(cluster, backend, snapshot, now)
    return counts


def endpoints_orphans_step(now: datetime) -> dict[str, int]:
    """Live endpoints no cluster step sees: not launched and their server has no node on any cluster
    (they wait, or stop at the booking's end), not launched and due to stop, or launched on a cluster
    since removed (failed)."""
    counts: dict[str, int] = {}
    # Not launched and due on a node of a cluster: that cluster's step, unless it must stop anyway (the
    # booking ended or is no longer paid), which needs no cluster (its cluster may be down).
    orphans = Endpoint.objects.filter(status__in=Endpoint.LIVE, cluster__isnull=True).exclude(
        Q(k8s_name="")
        & Q(booking__server__cluster_node__isnull=False)
        & Q(booking__end__gt=now, booking__status__in=RUNNABLE, stop_requested=False)
    )
    for endpoint in orphans.order_by("pk"):
        try:
            outcome = endpoint_advance(endpoint=endpoint, now=now)
        except Exception:  # one endpoint's failure must not stop the others
            logger.exception("advancing endpoint %s failed", endpoint.public_id)
            outcome = "error"
        counts[f"endpoints-{outcome}"] = counts.get(f"endpoints-{outcome}", 0) + 1
    return counts


def endpoint_advance(
    *,
    endpoint: Endpoint,
    now: datetime,
    cluster: Cluster | None = None,
    backend: ClusterBackend | None = None,
    snapshot: ClusterSnapshot | None = None,
) -> str:
    """One step of a live endpoint's life; returns what happened (a short word, counted by the tick).
    ``backend`` (and ``snapshot``) are ``cluster``'s, when the caller has them; else one is built."""
    if cluster is None or (endpoint.cluster_id not in (None, cluster.pk)):
        backend, snapshot = None, None
    booking = Booking.objects.get(pk=endpoint.booking_id)
    must_stop = endpoint.stop_requested or booking.status not in RUNNABLE or now >= booking.end
    if not endpoint.k8s_name:
        if must_stop:
            _finish(endpoint, Endpoint.Status.STOPPED, _stop_reason(endpoint, booking), at=now)
            return "stopped"
        if booking.start > now:
            return "waiting"
        return _launch(endpoint, booking, now, cluster, backend)
    if endpoint.cluster_id is None:
        _meter(endpoint, ready=0, until=now, final=True)
        _finish(endpoint, Endpoint.Status.FAILED, "Its cluster was removed.", at=now)
        return "failed"
    # A job's failover moved the booking to another server: the replicas follow it.
    moved = endpoint.server_id is not None and endpoint.server_id != booking.server_id
    own = backend is None
    backend = backend or backend_for(endpoint.cluster, clock=lambda: now)
    try:
        try:
            state = snapshot.deployment(endpoint.namespace, endpoint.k8s_name) if snapshot else None
            if state is None:  # not in the snapshot (or none): ask
                state = backend.deployment_state(endpoint.namespace, endpoint.k8s_name)
            if must_stop or moved:
                backend.delete_endpoint(endpoint.namespace, endpoint.k8s_name)
            elif state is not None and state.image != endpoint.image:
                backend.set_deployment_image(endpoint.namespace, endpoint.k8s_name, endpoint.image)
        except BackendError as exc:
            cluster_mark_unhealthy(cluster=endpoint.cluster, error=exc, now=now)
            return "unreachable"
        ready = state.ready_replicas if state is not None else 0
        if must_stop:
            _meter(endpoint, ready=ready, until=min(now, booking.end), final=True)
            _finish(endpoint, Endpoint.Status.STOPPED, _stop_reason(endpoint, booking), at=min(now, booking.end))
            return "stopped"
        _meter(endpoint, ready=ready, until=now, final=False)
        if moved:  # launched on the booking's new server by a later step (as a first launch)
            Endpoint.objects.filter(pk=endpoint.pk).update(
                cluster=None,
                server=None,
                node_name="",
                namespace="",
                k8s_name="",
                service_name="",
                ready_replicas=0,
                status=Endpoint.Status.PENDING,
                message="The booking moved to another server (failover); starting there.",
            )
            return "moved"
        if state is None:  # deleted behind our back: create it again
            return "relaunched" if _launch(endpoint, booking, now, cluster, backend) == "launched" else "gone"
        return _observe(endpoint, state)
    finally:
        if own:
            _close(backend)


def _launch(
    endpoint: Endpoint, booking: Booking, now: datetime, cluster: Cluster | None, backend: ClusterBackend | None
) -> str:
    """Create the env Secret, the Deployment and its Service on the node behind the booked server."""
    node = selectors.ready_node_for_server(booking.server_id)
    if node is None:
        Endpoint.objects.filter(pk=endpoint.pk).update(
            message="Waiting: the booked server has no ready node on a connected cluster."
        )
        return "no-node"
    cpu_milli, memory_mib = _share(booking, endpoint.gpus_per_replica)
    name = endpoint.k8s_name or _k8s_name(endpoint)
    spec = EndpointSpec(
        pod=JobSpec(
            name=name,
            namespace=_namespace(endpoint),
            node=node.hostname,
            image=endpoint.image,
            command=list(endpoint.command),
            args=list(endpoint.args),
            env=crypto.unseal_json(endpoint.env_sealed) if endpoint.env_sealed else {},
            gpu_count=endpoint.gpus_per_replica,
            active_deadline_seconds=max(1, int((booking.end - now).total_seconds())),
            labels={LABEL_BOOKING: str(booking.public_id), LABEL_ENDPOINT: str(endpoint.public_id)},
            cpu_milli=cpu_milli,
            memory_mib=memory_mib,
        ),
        replicas=endpoint.replicas,
        port=endpoint.port,
        readiness_path=endpoint.readiness_path,
    )
    own = backend is None or cluster is None or cluster.pk != node.cluster_id
    if own:  # the caller's backend is another cluster's (or there is none)
        backend = backend_for(node.cluster, clock=lambda: now)
    try:
        backend.ensure_namespace(spec.namespace)
        fields, note = storage.endpoint_storage_prepare(
            endpoint=endpoint, backend=backend, namespace=spec.namespace, server_id=booking.server_id
        )
        spec = dataclasses.replace(spec, pod=dataclasses.replace(spec.pod, **fields))
        backend.create_endpoint(spec)
    except BackendError as exc:
        cluster_mark_unhealthy(cluster=node.cluster, error=exc, now=now)
        return "unreachable"
    finally:
        if own:
            _close(backend)
    first = not endpoint.launched_at
    Endpoint.objects.filter(pk=endpoint.pk).update(
        cluster=node.cluster,
        server_id=booking.server_id,
        node_name=node.hostname,
        namespace=spec.namespace,
        k8s_name=name,
        service_name=name,
        launched_at=endpoint.launched_at or now,
        # A first launch (or one after a move, metered up to its moment) counts from now; a Deployment
        # created again under its name keeps counting from the last metering.
        metered_until=now if not endpoint.k8s_name else (endpoint.metered_until or now),
        reported_until=endpoint.reported_until or now,
        ready_replicas=0,
        status=Endpoint.Status.PENDING,
        message=(
            f"Created on {node.hostname}; waiting for the replicas to be ready."
            if first
            else f"The Deployment had disappeared; created again on {node.hostname}."
        )[: 500 - len(note)]
        + note,
    )
    endpoint.refresh_from_db()
    return "launched"


def _observe(endpoint: Endpoint, state: DeploymentState) -> str:
    """Status, ready replicas, message and the image running, as the Deployment reports them."""
    ready, wanted = state.ready_replicas, state.replicas
    reason = f" {state.message}" if state.message else ""
    rolled = (
        state.image == endpoint.image
        and state.updated_replicas >= wanted
        and state.observed_generation >= state.generation
    )
    rolling = not rolled and bool(endpoint.running_image) and endpoint.running_image != endpoint.image
    if ready >= wanted:
        status, message = Endpoint.Status.READY, f"All {wanted} replica(s) ready."
    elif ready == 0 and endpoint.status == Endpoint.Status.PENDING and not endpoint.running_image:
        status, message = Endpoint.Status.PENDING, f"Starting: {ready} of {wanted} replica(s) ready.{reason}"
    else:
        status, message = Endpoint.Status.DEGRADED, f"{ready} of {wanted} replica(s) ready.{reason}"
    if rolling:
        message = f"Rolling to {endpoint.image}: {message}"
    running_image = endpoint.image if rolled else endpoint.running_image
    if ready >= wanted and not running_image:
        running_image = state.image
    Endpoint.objects.filter(pk=endpoint.pk).update(
        status=status, ready_replicas=ready, message=message[:500], running_image=running_image
    )
    return status.value


def _meter(endpoint: Endpoint, *, ready: int, until: datetime, final: bool) -> int:
    """Count ``ready`` replicas for the interval since ``metered_until`` (up to ``until``, inside the
    booking), then report what is unreported to the marketplace when due (or ``final``); returns
    the GPU-seconds counted now."""
    with transaction.atomic():
        row = Endpoint.objects.select_related("booking").get(pk=endpoint.pk)
        booking = row.booking
        if row.metered_until is None:  # never launched
            return 0
        start = max(row.metered_until, booking.start)
        end = min(until, booking.end)
        seconds = int((end - start).total_seconds())
        counted = 0
        if seconds > 0:
            end = start + timedelta(seconds=seconds)
            counted = seconds * ready * row.gpus_per_replica
            won = Endpoint.objects.filter(pk=row.pk, metered_until=row.metered_until).update(
                metered_until=end,
                ready_replica_seconds=F("ready_replica_seconds") + seconds * ready,
                unreported_gpu_seconds=F("unreported_gpu_seconds") + counted,
            )
            if not won:  # another tick counted this interval first
                return 0
            row.refresh_from_db()
        _report(row, booking, final=final)
    return counted


def _report(row: Endpoint, booking: Booking, *, final: bool) -> None:
    """Report ``[reported_until, metered_until)`` as usage when it spans SCHEDULER_METER_SECONDS, or at the end."""
    start, end = row.reported_until or row.launched_at, row.metered_until
    if start is None or end is None or end <= start:
        return
    if not final and (end - start).total_seconds() < settings.SCHEDULER_METER_SECONDS:
        return
    gpu_seconds = row.unreported_gpu_seconds
    won = Endpoint.objects.filter(pk=row.pk, reported_until=row.reported_until).update(
        reported_until=end,
        unreported_gpu_seconds=F("unreported_gpu_seconds") - gpu_seconds,
        gpu_seconds=F("gpu_seconds") + gpu_seconds,
    )
    if not won or gpu_seconds <= 0:
        return
    booking_services.booking_record_usage(
        booking=booking,
        key=f"endpoint:{row.public_id}:{int(start.timestamp())}-{int(end.timestamp())}",
        interval_start=start,
        interval_end=end,
        gpu_seconds=gpu_seconds,
    )


def _finish(endpoint: Endpoint, status: Endpoint.Status, message: str, *, at: datetime) -> None:
    Endpoint.objects.filter(pk=endpoint.pk).update(
        status=status, message=message[:500], finished_at=at, ready_replicas=0
    )


def _stop_reason(endpoint: Endpoint, booking: Booking) -> str:
    if endpoint.stop_requested:
        return "Stopped by the renter."
    if booking.status not in RUNNABLE:
        return f"The booking is {booking.get_status_display().lower()}."
    return "The booking ended."


def _collect(cluster: Cluster, backend: ClusterBackend, snapshot: ClusterSnapshot | None, now: datetime) -> int:
    """Delete every Deployment of ours (with its Service and Secret) that no live endpoint on this
    cluster owns under that name."""
    try:
        # The simulated cluster's snapshot carries no Deployments: it is asked (a database read).
        listed = snapshot is not None and not getattr(backend, "simulated", False)
        deployments = list(snapshot.deployments.values()) if listed else backend.list_deployments()
    except BackendError as exc:
        cluster_mark_unhealthy(cluster=cluster, error=exc, now=now)
        return 0
    keep = set(
        Endpoint.objects.filter(cluster=cluster, status__in=Endpoint.LIVE, booking__end__gt=now).values_list(
            "namespace", "k8s_name"
        )
    )
    deleted = 0
    for state in deployments:
        if LABEL_ENDPOINT not in state.labels or (state.namespace, state.name) in keep:
            continue
        try:
            backend.delete_endpoint(state.namespace, state.name)
            deleted += 1
        except BackendError as exc:
            logger.warning("could not collect deployment %s/%s: %s", state.namespace, state.name, exc)
    return deleted


def _add(counts: dict[str, int], more: dict[str, int]) -> None:
    for key, value in more.items():
        counts[key] = counts.get(key, 0) + value


def _close(backend: ClusterBackend) -> None:
    close = getattr(backend, "close", None)
    if close is not None:
        close()
