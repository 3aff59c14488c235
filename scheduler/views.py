"""Scheduler pages: owners' clusters and nodes; renters' jobs and quick book.
Thin: a form, one service, a template."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Role
from accounts.permissions import role_required
from accounts.selectors import owner_company_for_user
from core.forms import form_submit
from marketplace.selectors import bookings as booking_selectors
from scheduler import selectors
from scheduler.forms import ClusterConnectForm, JobForm, QuickBookForm, SimulatedClusterForm
from scheduler.models import Cluster, Job
from scheduler.services import clusters, jobs, quickbook

LOG_LINES = 60


# --- Owners ------------------------------------------------------------------------------


def _owner(request):
    company = owner_company_for_user(request.user)
    if company is None:
        raise Http404("You are not a member of an owner company.")
    return company


@role_required(Role.OWNER)
@require_http_methods(["GET", "POST"])
def owner_clusters(request):
    owner = _owner(request)
    connect = ClusterConnectForm(prefix="k8s")
    simulated = SimulatedClusterForm(prefix="sim")
    status = 200
    if request.method == "POST":
        if "sim-name" in request.POST:
            simulated = SimulatedClusterForm(request.POST, prefix="sim")
            done = form_submit(simulated, lambda d: clusters.cluster_create_simulated(owner=owner, name=d["name"]))
        else:
            connect = ClusterConnectForm(request.POST, request.FILES, prefix="k8s")
            done = form_submit(
                connect,
                lambda d: clusters.cluster_connect(owner=owner, name=d["name"], kubeconfig=d["kubeconfig"]),
            )
        if done:
            messages.success(request, "Cluster connected and its nodes synced.")
            return redirect("scheduler:owner_clusters")
        status = 400
    context = {"clusters": selectors.owner_clusters(owner), "connect": connect, "simulated": simulated}
    return render(request, "scheduler/owner_clusters.html", context, status=status)


def _owner_cluster(request, pk: int) -> Cluster:
    return get_object_or_404(Cluster, pk=pk, owner=_owner(request))


@role_required(Role.OWNER)
def owner_cluster_detail(request, pk: int):
    cluster = _owner_cluster(request, pk)
    nodes = cluster.nodes.select_related("server").order_by("name")
    return render(request, "scheduler/owner_cluster.html", {"cluster": cluster, "nodes": nodes})


@role_required(Role.OWNER)
@require_POST
def owner_cluster_sync(request, pk: int):
    cluster = _owner_cluster(request, pk)
    clusters.cluster_sync(cluster=cluster)
    cluster.refresh_from_db()
    if cluster.health == Cluster.Health.HEALTHY:
        messages.success(request, f"Synced {cluster.nodes.count()} node(s).")
    else:
        messages.error(request, f"The cluster is unreachable: {cluster.health_message}")
    return redirect("scheduler:owner_cluster", pk=pk)


@role_required(Role.OWNER)
@require_POST
def owner_node_ready(request, pk: int, node: str):
    cluster = _owner_cluster(request, pk)
    ready = request.POST.get("ready") == "1"
    clusters.simulated_node_set_ready(cluster=cluster, node_name=node, ready=ready)
    messages.info(request, f"Node {node} is {'back' if ready else 'down: its jobs fail over'}.")
    return redirect("scheduler:owner_cluster", pk=pk)


# --- Renters -------------------------------------------------------------------------------


def _my_job(request, public_id) -> Job:
    return get_object_or_404(selectors.renter_jobs(request.user), public_id=public_id)


@role_required(Role.RENTER)
def job_list(request):
    return render(request, "scheduler/job_list.html", {"jobs": selectors.renter_jobs(request.user)[:200]})


@role_required(Role.RENTER)
@require_http_methods(["GET", "POST"])
def job_new(request, public_id):
    booking = booking_selectors.booking_get_for_renter(renter=request.user, public_id=public_id)
    if booking is None:
        raise Http404("No such booking.")
    form = JobForm(request.POST or None, initial={"gpu_count": booking.gpu_count})
    if request.method == "POST" and (
        done := form_submit(
            form,
            lambda d: jobs.job_submit(
                booking=booking,
                renter=request.user,
                name=d["name"],
                image=d["image"],
                command=d["command"],
                env=d["env"],
                gpu_count=d["gpu_count"],
            ),
        )
    ):
        messages.success(request, "Job submitted.")
        return redirect("scheduler:job_detail", public_id=done.result.public_id)
    status = 400 if form.errors else 200
    return render(request, "scheduler/job_new.html", {"booking": booking, "form": form}, status=status)


def _progress(job: Job, now) -> int:
    booking = job.booking
    span = (booking.end - booking.start).total_seconds()
    done = (min(max(now, booking.start), booking.end) - booking.start).total_seconds()
    return int(100 * done / span) if span > 0 else 0


def _status(job: Job, now) -> dict:
    return {
        "status": job.status,
        "status_label": job.get_status_display(),
        "message": job.message,
        "progress": _progress(job, now),
        "gpu_seconds": job.gpu_seconds,
        "node": job.node_name,
        "attempt": job.attempt,
        "logs": jobs.job_logs(job=job, lines=LOG_LINES, now=now),
        "events": [
            {"at": e.at.isoformat(), "kind": e.kind, "message": e.message} for e in job.events.order_by("at", "id")
        ],
    }


@role_required(Role.RENTER)
def job_detail(request, public_id):
    job = _my_job(request, public_id)
    now = timezone.now()
    context = {
        "job": job,
        "booking": job.booking,
        "state": _status(job, now),
        "simulated": bool(job.cluster and job.cluster.simulated),
    }
    return render(request, "scheduler/job_detail.html", context)


@role_required(Role.RENTER)
def job_status(request, public_id):
    """The job page polls this for status, progress and the log tail."""
    return JsonResponse(_status(_my_job(request, public_id), timezone.now()))


@role_required(Role.RENTER)
@require_POST
def job_cancel(request, public_id):
    job = _my_job(request, public_id)
    try:
        jobs.job_cancel(job=job, renter=request.user)
        messages.success(request, "Job stopped. The time it ran is billed; the rest of the booking stays yours.")
    except ValidationError as exc:  # already finished
        messages.error(request, "; ".join(exc.messages))
    return redirect("scheduler:job_detail", public_id=public_id)


@role_required(Role.RENTER)
@require_http_methods(["GET", "POST"])
def quick_book(request):
    form = QuickBookForm(request.POST or None)
    if request.method == "POST" and (
        done := form_submit(
            form,
            lambda d: quickbook.quick_book(
                renter=request.user,
                gpu_count=d["gpu_count"],
                gpu_models=[d["gpu_model"]],
                hours=d["hours"],
                price_cap=d["price_cap"],
                region=d["region"],
            ),
        )
    ):
        return redirect("marketplace:checkout", public_id=done.result.public_id)
    return render(request, "scheduler/quick_book.html", {"form": form}, status=400 if form.errors else 200)
