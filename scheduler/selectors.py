"""Scheduler reads: placement candidates, the nodes behind servers, job and
cluster pages. The only door to ``financing`` (collateral needs)."""

from datetime import datetime
from decimal import Decimal

from django.db.models import Count, Q, QuerySet

from accounts.models import OwnerCompany, User
from financing.selectors.placement import placement_needs
from marketplace.models import BookingGpu, Gpu, Listing
from marketplace.selectors.search import SearchQuery, listing_search
from scheduler import placement
from scheduler.models import Cluster, Endpoint, Job, Node


def collateral_needs(server_ids, *, now: datetime | None = None) -> dict[int, float]:
    """Server → GPUs its loan needs rented continuously to cover its debt service (financing's view)."""
    return placement_needs(server_ids, now=now)


def ready_node_for_server(server_id: int) -> Node | None:
    """The cluster node that runs the server's GPUs, when it can take work."""
    return (
        Node.objects.select_related("cluster")
        .filter(server_id=server_id, ready=True)
        .exclude(cluster__health=Cluster.Health.UNHEALTHY)
        .first()
    )


def placement_candidates(
    *,
    gpu_count: int,
    gpu_model_ids: tuple[int, ...] = (),
    min_vram_gb: int | None = None,
    price_cap: Decimal | None = None,
    start: datetime,
    end: datetime,
    exclude_server_id: int | None = None,
    ready_nodes_only: bool = True,
) -> tuple[list[placement.Node], dict[int, int], dict[int, Listing]]:
    """Listings that could take ``gpu_count`` GPUs for [start, end), as the
    placement engine's input: nodes, free GPUs per server, and the listing of
    each server."""
    listings = listing_search(
        SearchQuery(
            gpu_models=tuple(gpu_model_ids),
            gpu_count=gpu_count,
            min_vram_gb=min_vram_gb,
            max_price=price_cap,
            start=start,
            end=end,
        )
    )
    if exclude_server_id:
        listings = listings.exclude(server_id=exclude_server_id)
    if ready_nodes_only:
        listings = listings.filter(server__cluster_node__ready=True).exclude(
            server__cluster_node__cluster__health=Cluster.Health.UNHEALTHY
        )
    by_server = {listing.server_id: listing for listing in listings}
    if not by_server:
        return [], {}, {}
    in_service = dict(
        Gpu.objects.filter(server_id__in=by_server, status=Gpu.Status.AVAILABLE)
        .values("server_id")
        .annotate(n=Count("id"))
        .values_list("server_id", "n")
    )
    held = dict(
        BookingGpu.objects.filter(server_id__in=by_server, held=True, start__lt=end, end__gt=start)
        .values("server_id")
        .annotate(n=Count("gpu_id", distinct=True))
        .values_list("server_id", "n")
    )
    nodes = [
        placement.Node(
            server_id=server_id,
            model=listing.gpu_model.name,
            gpus=listing.gpus_in_service,
            vram_gb=listing.vram_gb or 0,
            price=listing.price_per_gpu_hour,
            region=listing.region.code,
        )
        for server_id, listing in by_server.items()
    ]
    free = {server_id: in_service.get(server_id, 0) - held.get(server_id, 0) for server_id in by_server}
    return nodes, free, by_server


def owner_clusters(owner: OwnerCompany) -> QuerySet[Cluster]:
    return Cluster.objects.filter(owner=owner).annotate(
        node_count=Count("nodes"),
        ready_count=Count("nodes", filter=Q(nodes__ready=True)),
        mismatch_count=Count("nodes", filter=~Q(nodes__mismatch="")),
    )


def renter_jobs(user: User) -> QuerySet[Job]:
    return Job.objects.filter(renter=user).select_related("booking__listing__gpu_model", "cluster")


def booking_live_gpus(booking_id: int, *, exclude_job: int | None = None, exclude_endpoint: int | None = None) -> int:
    """The booking's GPUs taken by its live jobs and live inference endpoints (replicas × GPUs each):
    jobs and endpoints share the booking's GPUs, each side counting the other."""
    jobs = Job.objects.filter(booking_id=booking_id, status__in=Job.LIVE)
    if exclude_job:
        jobs = jobs.exclude(pk=exclude_job)
    endpoints = Endpoint.objects.filter(booking_id=booking_id, status__in=Endpoint.LIVE)
    if exclude_endpoint:
        endpoints = endpoints.exclude(pk=exclude_endpoint)
    taken = sum(replicas * gpus for replicas, gpus in endpoints.values_list("replicas", "gpus_per_replica"))
    return sum(jobs.values_list("gpu_count", flat=True)) + taken


def renter_endpoints(user: User) -> QuerySet[Endpoint]:
    return Endpoint.objects.filter(renter=user).select_related("booking", "cluster")


def models_with_supply(*, now: datetime | None = None) -> QuerySet:
    """GPU models a renter can quick book now, each annotated ``free_gpus``: GPUs in service on an
    active listing of a ready node on a cluster that is not unhealthy, held by no booking at ``now``.
    Models with none are left out (quick book offers only what it can place); ordered by name."""
    # Imported here: this function was appended beside the placement selectors above.
    from django.db.models import OuterRef, Subquery
    from django.db.models.functions import Coalesce
    from django.utils import timezone

    from marketplace.models import GpuModel

    now = now or timezone.now()
    held_now = BookingGpu.objects.filter(held=True, start__lte=now, end__gt=now).values("gpu_id")
    free = (
        Gpu.objects.filter(
            status=Gpu.Status.AVAILABLE,
            server__listing__gpu_model=OuterRef("pk"),
            server__listing__status=Listing.Status.ACTIVE,
            server__cluster_node__ready=True,
        )
        .exclude(server__cluster_node__cluster__health=Cluster.Health.UNHEALTHY)
        .exclude(pk__in=held_now)
        .order_by()
        .values("server__listing__gpu_model")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return GpuModel.objects.annotate(free_gpus=Coalesce(Subquery(free), 0)).filter(free_gpus__gt=0).order_by("name")
