"""Quick book: "N GPUs of model X, now, for H hours" — the placement engine picks the server.

The engine (``scheduler.engine``) keeps the free GPUs of every placeable
server in memory and ranks the servers that can take the request for the
window: best fit within the models asked for, loans that need revenue first,
cheapest among equals. A renter is shown two or three of them
(``quick_book_options``): the engine's best, then the cheapest and the most
reliable of the rest, each priced exactly as the booking will be. Booking one
(``quick_book_select``) re-checks the price and books it like any other
listing; a lost race says so and leaves the renter the other options.
``quick_book`` books the engine's best in one step (the API's original call),
moving on to the next on a lost race.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal

from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.models import User
from core.errors import ConflictError
from marketplace.models import Booking, GpuModel, Listing, Region
from marketplace.services import bookings as booking_services
from scheduler import engine, placement, selectors

MAX_ATTEMPTS = 3
OPTIONS_POOL = 8  # candidates asked of the engine to pick the cheapest and most reliable alternatives from

BEST = "Best placement"
CHEAPEST = "Cheapest"
MOST_RELIABLE = "Most reliable"


@dataclass(frozen=True)
class QuickBookOption:
    """One placement shown to the renter, priced as ``booking_create`` will charge it."""

    label: str
    listing_id: int
    server_id: int
    hostname: str
    region: str  # the region's code
    region_name: str
    gpu_model: str
    gpu_count: int
    price_per_gpu_hour: Decimal
    total: Decimal  # the booking's amount for the window, in whole cents
    reliability: Decimal
    start: datetime
    end: datetime

    @property
    def reliability_percent(self) -> Decimal:
        """Reliability as a percentage to one decimal, for the page (0.9990 → 99.9)."""
        return (self.reliability * 100).quantize(Decimal("0.1"), rounding=ROUND_DOWN)


def _window(now: datetime, hours: int) -> tuple[datetime, datetime]:
    """Quick book's window: from the next whole minute, ``hours`` long."""
    start = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return start, start + timedelta(hours=hours)


def _request(
    *,
    gpu_count: int,
    gpu_models: list[GpuModel],
    price_cap: Decimal | None,
    region: Region | None,
    cpu_milli: int,
    memory_mib: int,
) -> placement.Request:
    return placement.Request(
        gpu_count=gpu_count,
        models=frozenset(m.name for m in gpu_models) or None,
        price_cap=price_cap,
        region=region.code if region else None,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
    )


def no_server_error(gpu_count: int, hours: int) -> ValidationError:
    return ValidationError(
        {
            "gpu_count": f"No server can run {gpu_count} GPU(s) of that kind now for {hours} h; try fewer GPUs, "
            "another model or a higher price cap."
        }
    )


def _pick(candidates: list[engine.Candidate]) -> list[tuple[str, engine.Candidate]]:
    """The engine's best, then the cheapest of the rest, then the most reliable of what is left.

    Ties keep the engine's order (its ranking is the better tie-break than the database's)."""
    if not candidates:
        return []
    picked = [(BEST, candidates[0])]
    rest = list(candidates[1:])
    if rest:
        cheapest = min(rest, key=lambda c: (c.price, -c.reliability))
        picked.append((CHEAPEST, cheapest))
        rest.remove(cheapest)
    if rest:
        reliable = max(rest, key=lambda c: (c.reliability, -c.price))
        picked.append((MOST_RELIABLE, reliable))
    return picked


def quick_book_options(
    *,
    gpu_count: int,
    gpu_models: list[GpuModel],
    hours: int,
    price_cap: Decimal | None = None,
    region: Region | None = None,
    cpu_milli: int = 0,
    memory_mib: int = 0,
    now: datetime | None = None,
) -> list[QuickBookOption]:
    """Two or three distinct servers that can take the request now, best first; [] when none can."""
    now = now or timezone.now()
    start, end = _window(now, hours)
    request = _request(
        gpu_count=gpu_count,
        gpu_models=gpu_models,
        price_cap=price_cap,
        region=region,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
    )
    candidates = engine.placement_options(request, start=start, end=end, k=OPTIONS_POOL)
    priced = []
    for candidate in candidates:
        try:
            quote = booking_services.booking_quote(
                listing=candidate.listing, gpu_count=gpu_count, start=start, end=end, now=now
            )
        except ValidationError:
            continue  # its terms refuse this window (duration, availability): not an option
        priced.append((candidate, quote))
    quotes = {id(c): q for c, q in priced}
    options = []
    for label, candidate in _pick([c for c, _ in priced]):
        listing = candidate.listing
        quote = quotes[id(candidate)]
        options.append(
            QuickBookOption(
                label=label,
                listing_id=listing.pk,
                server_id=candidate.server_id,
                hostname=listing.server.hostname,
                region=listing.region.code,
                region_name=listing.region.name,
                gpu_model=listing.gpu_model.name,
                gpu_count=gpu_count,
                price_per_gpu_hour=quote.price_per_gpu_hour,
                total=quote.amount,
                reliability=listing.reliability,
                start=start,
                end=end,
            )
        )
    return options


def quick_book(
    *,
    renter: User,
    gpu_count: int,
    gpu_models: list[GpuModel],
    hours: int,
    price_cap: Decimal | None = None,
    region: Region | None = None,
    cpu_milli: int = 0,
    memory_mib: int = 0,
    now: datetime | None = None,
) -> Booking:
    """Hold the best server for the request (awaiting payment), or say why none fits.

    A server taken between the engine's choice and the booking moves on to the next best."""
    now = now or timezone.now()
    start, end = _window(now, hours)
    request = _request(
        gpu_count=gpu_count,
        gpu_models=gpu_models,
        price_cap=price_cap,
        region=region,
        cpu_milli=cpu_milli,
        memory_mib=memory_mib,
    )
    for candidate in engine.placement_options(request, start=start, end=end, k=MAX_ATTEMPTS):
        try:
            return booking_services.booking_create(
                renter=renter,
                listing=candidate.listing,
                gpu_count=gpu_count,
                start=start,
                end=end,
                cpu_milli=cpu_milli,
                memory_mib=memory_mib,
                now=now,
            )
        except ConflictError:
            continue  # taken meanwhile: the next best
    raise no_server_error(gpu_count, hours)


def quick_book_select(
    *,
    renter: User,
    listing_id: int,
    gpu_count: int,
    hours: int,
    start: datetime | None = None,
    quoted_total: Decimal,
    cpu_milli: int = 0,
    memory_mib: int = 0,
    now: datetime | None = None,
) -> Booking:
    """Hold the option the renter chose (awaiting payment), at the total they were shown.

    ``start`` is the option's start; one already past (the renter took a while)
    moves to quick book's next start, same length, so the total is unchanged.
    Raises ``ValidationError`` when the price changed since (nothing is
    booked) or the server cannot take work now, ``ConflictError`` when its
    GPUs (or its CPU or memory) were taken meanwhile."""
    now = now or timezone.now()
    earliest, _ = _window(now, hours)
    start = max(start or earliest, earliest)
    end = start + timedelta(hours=hours)
    listing = Listing.objects.select_related("server", "region", "gpu_model").filter(pk=listing_id).first()
    if listing is None:
        raise ValidationError({"listing": "This server is no longer offered; choose another option."})
    if selectors.ready_node_for_server(listing.server_id) is None:
        raise ValidationError({"listing": "This server cannot take work right now; choose another option."})
    quote = booking_services.booking_quote(listing=listing, gpu_count=gpu_count, start=start, end=end, now=now)
    if quote.amount != quoted_total:
        raise ValidationError(
            {
                "quoted_total": f"The price of {listing.server.hostname} changed since it was shown: "
                f"${quoted_total} then, ${quote.amount} now for {gpu_count} GPU(s) × {hours} h. "
                "Nothing was booked; review the options and book again."
            }
        )
    try:
        return booking_services.booking_create(
            renter=renter,
            listing=listing,
            gpu_count=gpu_count,
            start=start,
            end=end,
            cpu_milli=cpu_milli,
            memory_mib=memory_mib,
            now=now,
            quoted_price=quote.price_per_gpu_hour,
        )
    except ConflictError as exc:  # its GPUs, or its CPU or memory, for the window
        raise ConflictError(
            {
                "listing": f"{listing.server.hostname} was just taken by someone else ({' '.join(exc.messages)}). "
                "Nothing was booked; choose one of the other options."
            },
            code="conflict",
        ) from exc
