"""Inventory reads: the catalogue, an owner's servers, platform-wide supply."""

from django.db.models import Count, Q, QuerySet

from accounts.models import OwnerCompany
from marketplace.models import Gpu, GpuModel, Region, Server


def gpu_model_list() -> QuerySet[GpuModel]:
    return GpuModel.objects.all().order_by("undisclosed", "-vram_gb", "name")


def region_list() -> QuerySet[Region]:
    return Region.objects.all()


def server_list_for_owner(*, owner: OwnerCompany, hostname_contains: str = "") -> QuerySet[Server]:
    servers = Server.objects.filter(owner=owner)
    if hostname_contains:
        servers = servers.filter(hostname__icontains=hostname_contains)
    return (
        servers.select_related("region")
        .annotate(
            gpu_total=Count("gpus", distinct=True),
            gpu_available=Count("gpus", filter=Q(gpus__status=Gpu.Status.AVAILABLE), distinct=True),
        )
        .order_by("hostname")
    )


def server_models(*, server: Server) -> list[str]:
    return sorted(set(server.gpus.values_list("model__name", flat=True)))


def gpu_list_for_owner(*, owner: OwnerCompany) -> QuerySet[Gpu]:
    return (
        Gpu.objects.filter(server__owner=owner).select_related("server", "model").order_by("server__hostname", "slot")
    )


def owner_inventory_summary(*, owner: OwnerCompany) -> dict:
    """Counts for the owner dashboard: servers, GPUs by status and by model."""
    gpus = Gpu.objects.filter(server__owner=owner)
    by_status = {row["status"]: row["n"] for row in gpus.values("status").annotate(n=Count("id"))}
    by_model = list(gpus.values("model__name").annotate(n=Count("id")).order_by("-n", "model__name"))
    return {
        "servers": Server.objects.filter(owner=owner).count(),
        "gpus": sum(by_status.values()),
        "by_status": {status: by_status.get(status, 0) for status in Gpu.Status.values},
        "by_model": [(row["model__name"], row["n"]) for row in by_model],
        "platform_serials": gpus.filter(serial_assigned_by_platform=True).count(),
    }


def supply_summary() -> dict:
    """Platform-wide supply of available GPUs by model and by region."""
    available = Gpu.objects.filter(status=Gpu.Status.AVAILABLE)
    by_model = list(
        available.values("model__name", "model__vram_gb").annotate(n=Count("id")).order_by("-n", "model__name")
    )
    by_region = list(available.values("server__region__name").annotate(n=Count("id")).order_by("-n"))
    return {
        "gpus": available.count(),
        "servers": Server.objects.filter(gpus__status=Gpu.Status.AVAILABLE).distinct().count(),
        "regions": Region.objects.filter(servers__isnull=False).distinct().count(),
        "by_model": by_model,
        "by_region": by_region,
    }
