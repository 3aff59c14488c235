"""Listings and their availability.

Availability rules (explicit windows and a weekly pattern, in UTC) are
expanded and merged into ``AvailabilitySlot`` rows up to the booking horizon,
so that search and the booking check ask one indexed question: is there a
slot that covers [start, end)? A listing without rules is always available.
"""

from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from marketplace.lock_objects import listing_lock
from marketplace.models import (
    MAX_CPU_MILLI_PER_GPU,
    MAX_MEMORY_MIB_PER_GPU,
    MIN_BOOKING_MINUTES,
    AvailabilityRule,
    AvailabilitySlot,
    Gpu,
    Listing,
    Server,
)
from marketplace.services.allocation import note_allocation_change


def _server_model_and_count(server: Server):
    gpus = list(server.gpus.select_related("model"))
    if not gpus:
        raise ValidationError({"server": "This server has no GPUs to list."})
    models = {g.model_id for g in gpus}
    if len(models) > 1:
        raise ValidationError({"server": "A listing offers one GPU model; this server mixes models."})
    return gpus[0].model, sum(1 for g in gpus if g.status == Gpu.Status.AVAILABLE)


def _validate_terms(price: Decimal, min_minutes: int, max_minutes: int) -> None:
    errors = {}
    if price is None or price <= 0:
        errors["price_per_gpu_hour"] = "The price must be more than zero."
    elif price != price.quantize(Decimal("0.01")):
        errors["price_per_gpu_hour"] = "Prices are in whole cents."
    if min_minutes < MIN_BOOKING_MINUTES:
        errors["min_duration_minutes"] = "The shortest booking is at least one hour (60 minutes)."
    if max_minutes < min_minutes:
        errors["max_duration_minutes"] = "The longest booking cannot be shorter than the shortest."
    if errors:
        raise ValidationError(errors)


def _cores(milli: int) -> str:
    return f"{Decimal(milli) / 1000:.3f}".rstrip("0").rstrip(".")


def validate_share(server: Server, cpu_milli_per_gpu: int | None, memory_mib_per_gpu: int | None) -> None:
    """The listing's CPU and memory per GPU, × the server's GPUs, must fit the server.

    Every GPU slot counts (not only those in service), so that a card back
    from repair cannot make the bookings' shares add up to more than the
    server has. None means an even split, which always fits."""
    errors = {}
    gpus = max(server.gpus.count(), 1)
    if cpu_milli_per_gpu is not None:
        if not 1 <= cpu_milli_per_gpu <= MAX_CPU_MILLI_PER_GPU:
            errors["cpu_milli_per_gpu"] = f"Enter between 1 and {MAX_CPU_MILLI_PER_GPU} millicores per GPU."
        elif cpu_milli_per_gpu * gpus > server.cpu_milli:
            errors["cpu_milli_per_gpu"] = (
                f"{_cores(cpu_milli_per_gpu)} cores × {gpus} GPUs is more than the server's "
                f"{_cores(server.cpu_milli)} cores; at most {_cores(server.cpu_milli // gpus)} cores per GPU."
            )
    if memory_mib_per_gpu is not None:
        if not 1 <= memory_mib_per_gpu <= MAX_MEMORY_MIB_PER_GPU:
            errors["memory_mib_per_gpu"] = f"Enter between 1 and {MAX_MEMORY_MIB_PER_GPU} MiB per GPU."
        elif memory_mib_per_gpu * gpus > server.memory_mib:
            errors["memory_mib_per_gpu"] = (
                f"{memory_mib_per_gpu} MiB × {gpus} GPUs is more than the server's {server.memory_mib} MiB "
                f"of RAM; at most {server.memory_mib // gpus} MiB per GPU."
            )
    if errors:
        raise ValidationError(errors)


def listing_create(
    *,
    server: Server,
    price_per_gpu_hour: Decimal,
    min_duration_minutes: int = MIN_BOOKING_MINUTES,
    max_duration_minutes: int = 30 * 24 * 60,
    cpu_milli_per_gpu: int | None = None,
    memory_mib_per_gpu: int | None = None,
) -> Listing:
    """List all GPUs of a server at one price per GPU-hour, with the CPU and
    memory a booking takes per GPU (None: an even split of the server)."""
    _validate_terms(price_per_gpu_hour, min_duration_minutes, max_duration_minutes)
    if Listing.objects.filter(server=server).exists():
        raise ValidationError({"server": "This server is already listed; edit its listing instead."})
    model, in_service = _server_model_and_count(server)
    validate_share(server, cpu_milli_per_gpu, memory_mib_per_gpu)
    with transaction.atomic():
        listing = Listing.objects.create(
            server=server,
            gpu_model=model,
            vram_gb=model.vram_gb,
            region_id=server.region_id,
            gpus_in_service=in_service,
            price_per_gpu_hour=price_per_gpu_hour,
            min_duration_minutes=min_duration_minutes,
            max_duration_minutes=max_duration_minutes,
            cpu_milli_per_gpu=cpu_milli_per_gpu,
            memory_mib_per_gpu=memory_mib_per_gpu,
        )
        note_allocation_change([server.pk])
    return listing


_UNCHANGED = object()


def listing_update(
    *,
    listing: Listing,
    price_per_gpu_hour: Decimal,
    min_duration_minutes: int,
    max_duration_minutes: int,
    cpu_milli_per_gpu=_UNCHANGED,
    memory_mib_per_gpu=_UNCHANGED,
) -> Listing:
    """Change the terms. Bookings already made keep the price they were quoted
    and the CPU and memory share they took. The share fields are left as they
    are unless passed (None: back to the even split)."""
    _validate_terms(price_per_gpu_hour, min_duration_minutes, max_duration_minutes)
    if cpu_milli_per_gpu is _UNCHANGED:
        cpu_milli_per_gpu = listing.cpu_milli_per_gpu
    if memory_mib_per_gpu is _UNCHANGED:
        memory_mib_per_gpu = listing.memory_mib_per_gpu
    validate_share(listing.server, cpu_milli_per_gpu, memory_mib_per_gpu)
    listing.price_per_gpu_hour = price_per_gpu_hour
    listing.min_duration_minutes = min_duration_minutes
    listing.max_duration_minutes = max_duration_minutes
    listing.cpu_milli_per_gpu = cpu_milli_per_gpu
    listing.memory_mib_per_gpu = memory_mib_per_gpu
    with transaction.atomic():
        listing.save(
            update_fields=[
                "price_per_gpu_hour",
                "min_duration_minutes",
                "max_duration_minutes",
                "cpu_milli_per_gpu",
                "memory_mib_per_gpu",
                "updated_at",
            ]
        )
        note_allocation_change([listing.server_id])
    return listing


def listing_set_status(*, listing: Listing, status: str) -> Listing:
    """Pause or resume a listing (a paused one takes no new bookings)."""
    if status not in Listing.Status.values:
        raise ValidationError({"status": f"Choose one of: {', '.join(Listing.Status.values)}."})
    listing.status = status
    with transaction.atomic():
        listing.save(update_fields=["status", "updated_at"])
        note_allocation_change([listing.server_id])
    return listing


def listing_refresh_inventory(*, server: Server) -> None:
    """Copy a listed server's in-service GPU count and region after an inventory
    change (a GPU's status, a GPU added or removed, the server edited), and
    record the change in the allocation feed. The caller's transaction holds both."""
    listing = Listing.objects.filter(server=server).first()
    if listing is None:
        return
    count = server.gpus.filter(status=Gpu.Status.AVAILABLE).count()
    Listing.objects.filter(pk=listing.pk).update(gpus_in_service=count, region_id=server.region_id)
    note_allocation_change([server.pk])


# --- Availability ---------------------------------------------------------------


def availability_window_add(*, listing: Listing, start: datetime, end: datetime) -> AvailabilityRule:
    if start is None or end is None or end <= start:
        raise ValidationError({"end": "The window must end after it starts."})
    with transaction.atomic():
        rule = AvailabilityRule.objects.create(listing=listing, kind=AvailabilityRule.Kind.WINDOW, start=start, end=end)
        availability_rebuild(listing=listing)
    return rule


def availability_weekly_add(*, listing: Listing, weekday: int, start_minute: int, end_minute: int) -> AvailabilityRule:
    errors = {}
    if not 0 <= weekday <= 6:
        errors["weekday"] = "Choose a day from Monday (0) to Sunday (6)."
    if not 0 <= start_minute < end_minute <= 1440:
        errors["end_minute"] = "The period must end after it starts, within the day (00:00–24:00 UTC)."
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        rule = AvailabilityRule.objects.create(
            listing=listing,
            kind=AvailabilityRule.Kind.WEEKLY,
            weekday=weekday,
            start_minute=start_minute,
            end_minute=end_minute,
        )
        availability_rebuild(listing=listing)
    return rule


def availability_rule_delete(*, rule: AvailabilityRule) -> None:
    listing = rule.listing
    with transaction.atomic():
        rule.delete()
        availability_rebuild(listing=listing)


def merge_intervals(intervals: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    """Merge overlapping or touching half-open intervals."""
    merged: list[tuple[datetime, datetime]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def expand_rules(rules: list[AvailabilityRule], *, since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """The intervals the rules open between ``since`` and ``until``, merged."""
    intervals = []
    for rule in rules:
        if rule.kind == AvailabilityRule.Kind.WINDOW and rule.end > since and rule.start < until:
            intervals.append((rule.start, rule.end))
    weekly = [r for r in rules if r.kind == AvailabilityRule.Kind.WEEKLY]
    if weekly:
        day = since.date() - timedelta(days=1)
        while day <= until.date():
            midnight = datetime.combine(day, time(0), tzinfo=UTC)
            for rule in weekly:
                if day.weekday() == rule.weekday:
                    intervals.append(
                        (midnight + timedelta(minutes=rule.start_minute), midnight + timedelta(minutes=rule.end_minute))
                    )
            day += timedelta(days=1)
    return merge_intervals(intervals)


def availability_rebuild(*, listing: Listing, now: datetime | None = None) -> int:
    """Re-expand a listing's rules into slots up to the horizon; returns the slot count."""
    now = now or timezone.now()
    rules = list(listing.rules.all())
    since = now - timedelta(days=1)
    until = now + timedelta(days=settings.BOOKING_HORIZON_DAYS + 1)
    AvailabilitySlot.objects.filter(listing=listing).delete()
    always = not rules
    if listing.always_available != always:
        Listing.objects.filter(pk=listing.pk).update(always_available=always)
        listing.always_available = always
    if always:
        return 0
    slots = [
        AvailabilitySlot(listing=listing, start=s, end=e) for s, e in expand_rules(rules, since=since, until=until)
    ]
    AvailabilitySlot.objects.bulk_create(slots)
    return len(slots)


def availability_extend_all(*, now: datetime | None = None) -> int:
    """Daily: move every weekly pattern's horizon forward."""
    listings = Listing.objects.filter(rules__kind=AvailabilityRule.Kind.WEEKLY).distinct()
    count = 0
    for listing in listings:
        with transaction.atomic():
            availability_rebuild(listing=listing, now=now)
        count += 1
    return count


def listing_record_reliability(*, server_id: int, interrupted: bool) -> None:
    """Move the listing's reliability towards 0 after an interruption, towards 1
    after a job served to its end (exponential smoothing, 4 places)."""
    with transaction.atomic():
        listing = listing_lock(server_id=server_id)
        if listing is None:
            return
        old = listing.reliability
        if interrupted:
            new = old * (1 - settings.SCHEDULER_RELIABILITY_PENALTY)
        else:
            new = old + (1 - old) * settings.SCHEDULER_RELIABILITY_RECOVERY
        listing.reliability = new.quantize(Decimal("0.0001"), rounding=ROUND_DOWN)
        listing.save(update_fields=["reliability"])
