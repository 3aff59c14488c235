"""Scheduler pages: owners' clusters and nodes; renters' jobs and quick book.
Thin: a form, one service, a template."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.handlers.asgi import ASGIRequest
from django.http import Http404, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Role
from accounts.permissions import role_required
from accounts.selectors import owner_company_for_user
from core.api import digits
from core.forms import form_errors_from, form_submit
from marketplace.selectors import bookings as booking_selectors
from scheduler import selectors
from scheduler.forms import (
    ClusterConnectForm,
    ClusterSshForm,
    ClusterStorageForm,
    JobForm,
    QuickBookForm,
    RegistryCredentialForm,
    SimulatedClusterForm,
    SshKeyForm,
    VolumeForm,
)
from scheduler.models import Cluster, Job, RegistryCredential, SshKey, Volume
from scheduler.services import clusters, jobs, logs, quickbook, sessions, storage
from scheduler.workload_templates import TEMPLATES, Kind

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
    ssh_form = ClusterSshForm(  # sessions helper
        initial={"ssh_service_type": cluster.ssh_service_type}, choices=Cluster.SshServiceType.choices
    )
    context = {"cluster": cluster, "nodes": nodes, "ssh_form": ssh_form}
    context["storage_form"] = ClusterStorageForm(  # storage helper
        initial={"storage_class": cluster.storage_class, "max_volume_gib": cluster.max_volume_gib}
    )
    return render(request, "scheduler/owner_cluster.html", context)


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
    initial = {"gpu_count": booking.gpu_count}
    template_key = request.GET.get("template", "")
    if template_key:  # prefill from a template (sessions helper); every field stays the renter's to change
        template = TEMPLATES.get(template_key)
        if template is not None and template.kind == Kind.INFERENCE:
            return redirect(f"/bookings/{booking.public_id}/endpoints/new/?template={template.key}")
        if template is not None:
            initial.update(JobForm.initial_from(sessions.template_fields(template.key)))
    form = JobForm(request.POST or None, initial=initial).storage_choices(  # storage helper
        credentials=RegistryCredential.objects.filter(renter=request.user),
        volumes=Volume.objects.filter(renter=request.user, server_id=booking.server_id).exclude(
            status=Volume.Status.DELETED
        ),
    )
    if request.method == "POST" and (
        done := form_submit(
            form,
            lambda d: jobs.job_submit(
                booking=booking,
                renter=request.user,
                name=d["name"],
                image=d["image"],
                command=d["command"],
                args=d["args"],
                env=d["env"],
                gpu_count=d["gpu_count"],
                ports=d["ports"],
                ssh=d["ssh"],
                registry_credential=d["registry_credential"],
                volume=d["volume"],
                allow_other_regions=d["allow_other_regions"],
            ),
        )
    ):
        messages.success(request, "Job submitted.")
        return redirect("scheduler:job_detail", public_id=done.result.public_id)
    status = 400 if form.errors else 200
    context = {"booking": booking, "form": form, "templates": TEMPLATES.values(), "template_key": template_key}
    return render(request, "scheduler/job_new.html", context, status=status)


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
        "session": sessions.session_info(job),
        "registry_automatic": job.events.filter(kind="registry").exists(),  # storage helper
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


OPTION_FIELDS = ("listing", "start", "quoted_total")  # what a card's "Book this" adds to the search


def _quick_book_select(renter, d):
    if d["listing"] is None or d["quoted_total"] is None:
        raise ValidationError("Find placements first, then book one of them.")
    return quickbook.quick_book_select(
        renter=renter,
        listing_id=d["listing"],
        gpu_count=d["gpu_count"],
        hours=d["hours"],
        start=d["start"],
        quoted_total=d["quoted_total"],
        cpu_milli=d["cpu_milli"],
        memory_mib=d["memory_mib"],
    )


@role_required(Role.RENTER)
@require_http_methods(["GET", "POST"])
def quick_book(request):
    """GET: the form. "Find placements": the two or three best options as cards.
    "Book this" on a card: hold that option and go to checkout; a price change or
    a server taken meanwhile is a form error shown above the options still open."""
    book = request.method == "POST" and "book" in request.POST
    form = QuickBookForm(request.POST or None, any_model=book)
    options = []
    if book and (done := form_submit(form, lambda d: _quick_book_select(request.user, d))):
        return redirect("marketplace:checkout", public_id=done.result.public_id)
    # After a refused booking the search itself is still valid: show the options still open.
    searched = request.method == "POST" and (form.is_valid() or hasattr(form, "service_error"))
    d = getattr(form, "cleaned_data", {})
    if searched and all(name in d for name in ("gpu_model", "gpu_count", "hours", "region")):
        options = quickbook.quick_book_options(
            gpu_count=d["gpu_count"],
            gpu_models=[d["gpu_model"]],
            hours=d["hours"],
            price_cap=d["price_cap"],
            region=d["region"],
            cpu_milli=d["cpu_milli"],
            memory_mib=d["memory_mib"],
        )
        if not options:
            form_errors_from(form, quickbook.no_server_error(d["gpu_count"], d["hours"]))
    carry = [
        (field.html_name, field.value())
        for field in form
        if field.name not in OPTION_FIELDS and field.value() not in (None, "")
    ]
    return render(
        request,
        "scheduler/quick_book.html",
        {"form": form, "options": options, "carry": carry},
        status=400 if form.errors else 200,
    )


# --- Sessions: the renter's SSH keys, the owner's SSH Service type (sessions helper) ---------------


@role_required(Role.RENTER)
@require_http_methods(["GET", "POST"])
def ssh_keys(request):
    """The renter's SSH public keys: add one, delete one (``?delete=<id>`` as a POST)."""
    form = SshKeyForm(request.POST if request.method == "POST" and "delete" not in request.POST else None)
    if request.method == "POST" and "delete" in request.POST:
        key = get_object_or_404(SshKey, pk=request.POST.get("delete") or 0, user=request.user)
        sessions.ssh_key_delete(user=request.user, key=key)
        messages.success(request, f"Key {key.name} deleted; running sessions keep it until their next start.")
        return redirect("scheduler_sessions:ssh_keys")
    if request.method == "POST" and (
        done := form_submit(
            form, lambda d: sessions.ssh_key_add(user=request.user, name=d["name"], public_key=d["public_key"])
        )
    ):
        messages.success(request, f"Key {done.result.name} added ({done.result.fingerprint}).")
        return redirect("scheduler_sessions:ssh_keys")
    context = {"form": form, "keys": SshKey.objects.filter(user=request.user)}
    return render(request, "scheduler/ssh_keys.html", context, status=400 if form.errors else 200)


@role_required(Role.OWNER)
@require_POST
def owner_cluster_ssh(request, pk: int):
    cluster = _owner_cluster(request, pk)
    form = ClusterSshForm(request.POST, choices=Cluster.SshServiceType.choices)
    if form_submit(
        form,
        lambda d: sessions.cluster_set_ssh_service_type(cluster=cluster, service_type=d["ssh_service_type"]),
    ):
        kind = form.cleaned_data["ssh_service_type"]
        messages.success(request, f"Renters' SSH sessions go through a {kind} Service.")
    else:
        messages.error(request, "; ".join(e for errors in form.errors.values() for e in errors))
    return redirect("scheduler:owner_cluster", pk=pk)


# --- Storage: registry credentials, volumes, followed and downloaded logs (storage helper) ----------


@role_required(Role.RENTER)
@require_http_methods(["GET", "POST"])
def registries(request):
    """The renter's registry credentials: add one; delete one (POST ``delete=<id>``)."""
    if request.method == "POST" and "delete" in request.POST:
        credential = get_object_or_404(RegistryCredential, pk=digits(request.POST["delete"]) or 0, renter=request.user)
        storage.registry_credential_delete(renter=request.user, credential=credential)
        messages.success(request, f"Credential {credential.name} deleted.")
        return redirect("scheduler_storage:registries")
    form = RegistryCredentialForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and (
        done := form_submit(form, lambda d: storage.registry_credential_create(renter=request.user, **d))
    ):
        messages.success(request, f"Credential {done.result.name} for {done.result.registry} saved.")
        return redirect("scheduler_storage:registries")
    context = {"form": form, "credentials": RegistryCredential.objects.filter(renter=request.user)}
    return render(request, "scheduler/registries.html", context, status=400 if form.errors else 200)


@role_required(Role.RENTER)
@require_http_methods(["GET", "POST"])
def volumes(request):
    """The renter's volumes: ask for one on a booked server; delete one (POST ``delete=<id>``)."""
    if request.method == "POST" and "delete" in request.POST:
        volume = get_object_or_404(Volume, pk=digits(request.POST["delete"]) or 0, renter=request.user)
        try:
            storage.volume_delete(renter=request.user, volume=volume)
            messages.success(request, f"Volume {volume.pvc_name} deleted, with its data.")
        except ValidationError as exc:
            messages.error(request, "; ".join(exc.messages))
        return redirect("scheduler_storage:volumes")
    bookings = [
        b
        for b in booking_selectors.booking_list_for_renter(renter=request.user).select_related("server")
        if b.status in jobs.RUNNABLE and b.end > timezone.now()
    ]
    form = VolumeForm(request.POST if request.method == "POST" else None, bookings=bookings)

    def create(d):
        booking = next(b for b in bookings if str(b.public_id) == d["booking"])
        return storage.volume_create(renter=request.user, booking=booking, size_gib=d["size_gib"])

    if request.method == "POST" and (done := form_submit(form, create)):
        messages.success(request, f"Volume {done.result.pvc_name} ready: jobs on that server can mount it.")
        return redirect("scheduler_storage:volumes")
    mine = Volume.objects.filter(renter=request.user).exclude(status=Volume.Status.DELETED).select_related("server")
    context = {"form": form, "volumes": mine}
    return render(request, "scheduler/volumes.html", context, status=400 if form.errors else 200)


@role_required(Role.OWNER)
@require_POST
def owner_cluster_storage(request, pk: int):
    cluster = _owner_cluster(request, pk)
    form = ClusterStorageForm(request.POST)
    if form_submit(form, lambda d: storage.cluster_set_storage(cluster=cluster, owner=_owner(request), **d)):
        cluster.refresh_from_db()
        offered = f"on {cluster.storage_class}, up to {cluster.max_volume_gib} GiB" if cluster.storage_class else "none"
        messages.success(request, f"Renters' volumes: {offered}.")
    else:
        messages.error(request, "; ".join(e for errors in form.errors.values() for e in errors))
    return redirect("scheduler:owner_cluster", pk=pk)


@role_required(Role.RENTER)
def job_log_stream(request, public_id):
    """The current attempt's log, followed (chunked ``text/plain``) until the container ends or the cap."""
    job = _my_job(request, public_id)
    # Under ASGI a synchronous iterator would be sent only once whole: hand the loop an asynchronous one.
    chunks = logs.job_log_follow_async(job=job) if isinstance(request, ASGIRequest) else logs.job_log_follow(job=job)
    response = StreamingHttpResponse(chunks, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"  # a proxy in front must pass chunks on as they come
    return response


@role_required(Role.RENTER)
def job_log_download(request, public_id):
    job = _my_job(request, public_id)
    response = HttpResponse(logs.job_log_download(job=job), content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{job.name}-attempt-{job.attempt}.log"'
    response["Cache-Control"] = "no-store"
    return response
