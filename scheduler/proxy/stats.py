"""Request statistics of inference endpoints: a fixed latency histogram per endpoint and minute
(``EndpointMinute``), and the figures an endpoint page shows (requests, errors, p50, p95).

Quantiles come from the histogram: the upper bound of the bucket where the cumulative count
reaches the quantile (so a p95 is never under-reported)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

# Upper bounds of the latency buckets, in milliseconds; the last bucket is everything above.
BUCKETS_MS: tuple[float, ...] = (
    1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750,
    1_000, 1_500, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 30_000, 60_000,
)  # fmt: skip


def bucket_of(latency_ms: float) -> int:
    """The index of the bucket ``latency_ms`` falls in (``len(BUCKETS_MS)`` for above the last bound)."""
    for index, bound in enumerate(BUCKETS_MS):
        if latency_ms <= bound:
            return index
    return len(BUCKETS_MS)


def merge(histograms: Iterable[Sequence[int]]) -> list[int]:
    total = [0] * (len(BUCKETS_MS) + 1)
    for histogram in histograms:
        for index, count in enumerate(histogram[: len(total)]):
            total[index] += int(count)
    return total


def quantile_ms(histogram: Sequence[int], q: float) -> float | None:
    """The latency under which a share ``q`` of the requests fell (None without requests)."""
    count = sum(histogram)
    if count == 0:
        return None
    target = q * count
    running = 0
    for index, bucket in enumerate(histogram):
        running += bucket
        if running >= target and bucket:
            return BUCKETS_MS[index] if index < len(BUCKETS_MS) else float("inf")
    return float("inf")


@dataclass(frozen=True)
class Summary:
    requests: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None


def endpoint_summary(endpoint, *, since: datetime | None = None, now: datetime | None = None) -> Summary:
    """Requests, errors and latency p50/p95 of ``endpoint`` since ``since`` (default: the last hour)."""
    from django.utils import timezone

    from scheduler.models import EndpointMinute

    now = now or timezone.now()
    since = since or now - timedelta(hours=1)
    rows = list(EndpointMinute.objects.filter(endpoint=endpoint, minute__gte=since).values_list(
        "requests", "errors", "latency_buckets"
    ))  # fmt: skip
    histogram = merge(row[2] for row in rows)
    return Summary(
        requests=sum(row[0] for row in rows),
        errors=sum(row[1] for row in rows),
        p50_ms=quantile_ms(histogram, 0.50),
        p95_ms=quantile_ms(histogram, 0.95),
    )
