"""Inventory pages: home, the renter and owner dashboards, an owner's servers and GPUs, CSV import."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Role
from accounts.permissions import role_required
from accounts.selectors import owner_company_for_user, user_has_mfa
from core.forms import form_submit
from marketplace.forms.inventory import GpuAddForm, GpuStatusForm, ServerCreateForm, ServerForm, ServerImportForm
from marketplace.models import Gpu, Server
from marketplace.selectors.inventory import (
    gpu_model_list,
    owner_inventory_summary,
    server_list_for_owner,
    supply_summary,
)
from marketplace.services import inventory


def home(request):
    return render(request, "marketplace/home.html", {"supply": supply_summary(), "models": gpu_model_list()})


@role_required(Role.RENTER)
def renter_dashboard(request):
    return render(request, "marketplace/renter_dashboard.html", {"supply": supply_summary()})


@role_required(Role.OWNER)
def owner_dashboard(request):
    company = owner_company_for_user(request.user)
    context = {
        "company": company,
        "summary": owner_inventory_summary(owner=company),
        "mfa_enabled": user_has_mfa(request.user),
    }
    return render(request, "marketplace/owner_dashboard.html", context)


def _owned_server(request, pk: int) -> Server:
    company = owner_company_for_user(request.user)
    return get_object_or_404(Server.objects.select_related("region"), pk=pk, owner=company)


SERVERS_PER_PAGE = 50


@role_required(Role.OWNER)
def server_list(request):
    company = owner_company_for_user(request.user)
    query = request.GET.get("q", "").strip()
    servers = server_list_for_owner(owner=company, hostname_contains=query)
    page = Paginator(servers, SERVERS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "marketplace/server_list.html", {"page": page, "servers": page.object_list, "q": query})


@role_required(Role.OWNER)
@require_http_methods(["GET", "POST"])
def server_create(request):
    company = owner_company_for_user(request.user)
    form = ServerCreateForm(request.POST or None)
    if request.method == "POST" and (done := form_submit(form, lambda d: inventory.server_create(owner=company, **d))):
        server = done.result
        messages.success(request, f"Server {server.hostname} registered with {server.gpus.count()} GPU(s).")
        return redirect("marketplace:server_detail", pk=server.pk)
    status = 400 if form.errors else 200
    return render(request, "marketplace/server_form.html", {"form": form, "creating": True}, status=status)


@role_required(Role.OWNER)
def server_detail(request, pk: int):
    return _server_detail(request, _owned_server(request, pk), gpu_form=GpuAddForm())


def _server_detail(request, server: Server, *, gpu_form: GpuAddForm, status: int = 200):
    context = {
        "server": server,
        "gpus": server.gpus.select_related("model"),
        "gpu_form": gpu_form,
        "status_choices": Gpu.Status.choices,
    }
    return render(request, "marketplace/server_detail.html", context, status=status)


@role_required(Role.OWNER)
@require_http_methods(["GET", "POST"])
def server_edit(request, pk: int):
    server = _owned_server(request, pk)
    initial = {name: getattr(server, name) for name in ServerForm.base_fields}
    form = ServerForm(request.POST or None, initial=initial)
    if request.method == "POST" and form_submit(form, lambda d: inventory.server_update(server=server, **d)):
        messages.success(request, "Server updated.")
        return redirect("marketplace:server_detail", pk=server.pk)
    status = 400 if form.errors else 200
    return render(request, "marketplace/server_form.html", {"form": form, "server": server}, status=status)


@role_required(Role.OWNER)
@require_POST
def server_delete(request, pk: int):
    server = _owned_server(request, pk)
    hostname = server.hostname
    try:
        inventory.server_delete(server=server)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("marketplace:server_detail", pk=server.pk)
    messages.success(request, f"Server {hostname} deleted.")
    return redirect("marketplace:server_list")


@role_required(Role.OWNER)
@require_POST
def gpu_add(request, pk: int):
    server = _owned_server(request, pk)
    form = GpuAddForm(request.POST)
    if form_submit(form, lambda d: inventory.gpu_add(server=server, serial=d["serial"], model=d["model"])):
        messages.success(request, "GPU added.")
        return redirect("marketplace:server_detail", pk=server.pk)
    return _server_detail(request, server, gpu_form=form, status=400)


@role_required(Role.OWNER)
@require_POST
def gpu_status(request, pk: int, gpu_pk: int):
    server = _owned_server(request, pk)
    gpu = get_object_or_404(Gpu, pk=gpu_pk, server=server)
    form = GpuStatusForm(request.POST)
    if form.is_valid():
        inventory.gpu_status_set(gpu=gpu, status=form.cleaned_data["status"])
        messages.success(request, f"GPU {gpu.serial} is now {gpu.get_status_display().lower()}.")
    else:
        messages.error(request, "Choose a valid status.")
    return redirect("marketplace:server_detail", pk=server.pk)


@role_required(Role.OWNER)
@require_POST
def gpu_remove(request, pk: int, gpu_pk: int):
    server = _owned_server(request, pk)
    gpu = get_object_or_404(Gpu, pk=gpu_pk, server=server)
    try:
        inventory.gpu_remove(gpu=gpu)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"GPU {gpu.serial} removed.")
    return redirect("marketplace:server_detail", pk=server.pk)


@role_required(Role.OWNER)
@require_http_methods(["GET", "POST"])
def server_import(request):
    company = owner_company_for_user(request.user)
    form = ServerImportForm(request.POST or None, request.FILES or None)
    row_errors = []
    if request.method == "POST" and form.is_valid():
        try:
            servers = inventory.servers_import_csv(
                owner=company, content=form.cleaned_data["file"], default_region=form.cleaned_data["default_region"]
            )
        except inventory.InventoryImportError as exc:
            row_errors = exc.errors
        else:
            messages.success(request, f"Imported {len(servers)} server(s).")
            return redirect("marketplace:server_list")
    status = 400 if (form.errors or row_errors) else 200
    return render(request, "marketplace/server_import.html", {"form": form, "row_errors": row_errors}, status=status)
