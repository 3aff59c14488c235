"""Bulk seeding for benchmarks: the Alibaba node list, cycled, plus current-generation servers.

Writes rows directly (bulk_create) because it builds tens of thousands of
servers; the services are exercised by the tests and by the measured requests.
"""

import csv
import zlib
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.utils import timezone

MODERN = ["H100 80GB", "A100 80GB", "L40S", "H200"]
PRICE = {
    "T4": "0.35",
    "P100": "0.45",
    "V100M16": "0.60",
    "V100M32": "0.85",
    "A10": "0.75",
    "G2": "0.50",
    "G3": "0.65",
    "H100 80GB": "2.49",
    "A100 80GB": "1.39",
    "L40S": "0.99",
    "H200": "3.29",
}


def seed_market(*, servers: int, gpus: int, owners: int = 5, weekly_share: int = 10, bookings: int = 0) -> dict:
    """``servers`` servers holding ``gpus`` GPUs in all: trace nodes (their real GPU
    counts) plus 8-GPU current-generation servers making up the difference."""
    from accounts.services import owner_company_create
    from marketplace.models import (
        AvailabilitySlot,
        Booking,
        BookingGpu,
        Gpu,
        GpuModel,
        Listing,
        Region,
        Server,
    )
    from marketplace.services.listings import expand_rules
    from tests.factories import UserFactory

    with open(settings.DEMO_NODE_LIST, newline="") as handle:
        trace = list(csv.DictReader(handle))
    avg = sum(int(r["gpu"]) for r in trace) / len(trace)
    n_modern = max(0, round((gpus - avg * servers) / (8 - avg)))
    n_trace = servers - n_modern
    companies = [owner_company_create(user=UserFactory(), name=f"Bench Owner {i}") for i in range(owners)]
    regions = list(Region.objects.order_by("code"))
    models = {m.trace_code or m.name: m for m in GpuModel.objects.all()}
    specs = []
    for i in range(n_trace):
        row = trace[i % len(trace)]
        specs.append(
            (
                f"{row['sn']}-{i // len(trace)}",
                int(row["cpu_milli"]),
                int(row["memory_mib"]),
                int(row["gpu"]),
                row["model"],
            )
        )
    for i in range(n_modern):
        specs.append((f"modern-{i:05d}", 192000, 2097152, 8, MODERN[i % len(MODERN)]))
    server_rows = Server.objects.bulk_create(
        [
            Server(
                owner=companies[i % owners],
                hostname=h,
                region=regions[zlib.crc32(h.encode()) % len(regions)],
                cpu_milli=cpu,
                memory_mib=mem,
            )
            for i, (h, cpu, mem, _, _) in enumerate(specs)
        ],
        batch_size=2000,
    )
    gpu_rows = [
        Gpu(server=s, slot=k, serial=f"B{s.pk:06d}{k:02d}", model=models[spec[4]])
        for s, spec in zip(server_rows, specs, strict=True)
        for k in range(spec[3])
    ]
    Gpu.objects.bulk_create(gpu_rows, batch_size=5000)
    listing_rows = Listing.objects.bulk_create(
        [
            Listing(
                server=s,
                gpu_model=models[spec[4]],
                vram_gb=models[spec[4]].vram_gb,
                region_id=s.region_id,
                reliability=Decimal(950 + zlib.crc32(s.hostname.encode()) % 50) / 1000,
                gpus_in_service=spec[3],
                price_per_gpu_hour=(
                    Decimal(PRICE[spec[4]]) * Decimal(85 + zlib.crc32(s.hostname.encode()) % 31) / 100
                ).quantize(Decimal("0.01")),
                always_available=(i % weekly_share != 0),
            )
            for i, (s, spec) in enumerate(zip(server_rows, specs, strict=True))
        ],
        batch_size=2000,
    )
    now = timezone.now()
    slots = []
    from marketplace.models import AvailabilityRule

    rules = [
        AvailabilityRule(listing=listing, kind="weekly", weekday=d, start_minute=480, end_minute=1200)
        for listing in listing_rows
        if not listing.always_available
        for d in range(5)
    ]
    AvailabilityRule.objects.bulk_create(rules, batch_size=5000)
    weekday_rules = [AvailabilityRule(kind="weekly", weekday=d, start_minute=480, end_minute=1200) for d in range(5)]
    intervals = expand_rules(
        weekday_rules, since=now - timedelta(days=1), until=now + timedelta(days=settings.BOOKING_HORIZON_DAYS + 1)
    )
    for listing in listing_rows:
        if not listing.always_available:
            slots.extend(AvailabilitySlot(listing=listing, start=s, end=e) for s, e in intervals)
    AvailabilitySlot.objects.bulk_create(slots, batch_size=10000)

    held = 0
    if bookings:
        renter = UserFactory()
        start0 = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        gpus_by_server: dict[int, list[int]] = {}
        for gpu_id, server_id in Gpu.objects.values_list("id", "server_id"):
            gpus_by_server.setdefault(server_id, []).append(gpu_id)
        booking_rows, allocation_specs = [], []
        for i in range(bookings):
            listing = listing_rows[(i * 7919) % len(listing_rows)]
            start = start0 + timedelta(hours=(i * 13) % 72)
            end = start + timedelta(hours=4)
            booking_rows.append(
                Booking(
                    renter=renter,
                    listing=listing,
                    server_id=listing.server_id,
                    gpu_count=1,
                    start=start,
                    end=end,
                    price_per_gpu_hour=listing.price_per_gpu_hour,
                    amount=listing.price_per_gpu_hour * 4,
                    status="confirmed",
                )
            )
            allocation_specs.append((listing.server_id, start, end))
        Booking.objects.bulk_create(booking_rows, batch_size=2000)
        used: dict[int, int] = {}
        allocations = []
        for booking, (server_id, start, end) in zip(booking_rows, allocation_specs, strict=True):
            k = used.get(server_id, 0)
            gpu_ids = gpus_by_server[server_id]
            if k >= len(gpu_ids):
                continue  # more bookings than GPUs on this server: skip rather than overlap
            used[server_id] = k + 1
            allocations.append(
                BookingGpu(booking=booking, gpu_id=gpu_ids[k], server_id=server_id, start=start, end=end)
            )
        BookingGpu.objects.bulk_create(allocations, batch_size=5000)
        held = len(allocations)
    return {
        "servers": Server.objects.count(),
        "gpus": Gpu.objects.count(),
        "listings": Listing.objects.count(),
        "held_allocations": held,
        "availability_slots": AvailabilitySlot.objects.count(),
    }


def seed_pledged_collateral(servers, *, approved_at):
    """Approved, pledged collateral for each server and one appraisal of each ($160,000), in bulk:
    the financed servers of the waterfall and payout benchmarks."""
    from datetime import date
    from decimal import Decimal

    from financing.models import Appraisal, Collateral

    collateral = Collateral.objects.bulk_create(
        [
            Collateral(
                server=s,
                purchase_price=Decimal("240000"),
                purchase_date=date(2026, 1, 1),
                custodian="DC",
                custody_receipt=f"R{s.pk}",
                insurer="Ins",
                policy_number=f"P{s.pk}",
                coverage=Decimal("250000"),
                insurance_expires=date(2028, 1, 1),
                lien="pledged",
                approved_at=approved_at,
            )
            for s in servers
        ]
    )
    appraisals = Appraisal.objects.bulk_create(
        [
            Appraisal(
                collateral=c,
                as_of=approved_at,
                age_years=Decimal("0.8"),
                depreciation_rate=Decimal("0.2"),
                residual_floor=Decimal("0.1"),
                depreciated_value=Decimal("200000"),
                trailing_net_revenue=Decimal("40000"),
                trailing_days=90,
                remaining_life_years=Decimal("4.2"),
                discount_rate=Decimal("0.12"),
                income_value=Decimal("160000"),
                value=Decimal("160000"),
            )
            for c in collateral
        ]
    )
    return collateral, appraisals
