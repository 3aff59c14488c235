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


# -- the proxy's in-process aggregate, flushed to EndpointMinute (proxy helper) --


class Recorder:
    """Per (endpoint, minute): requests, errors and the latency histogram, added up in memory by
    the proxy on its event loop and written by ``flush`` (a background task every few seconds,
    and at shutdown). Not thread-safe: one recorder per event loop."""

    def __init__(self) -> None:
        self._rows: dict[tuple[int, datetime], list] = {}

    def record(self, endpoint_id: int, *, at: datetime, latency_ms: float, error: bool) -> None:
        minute = at.replace(second=0, microsecond=0)
        row = self._rows.get((endpoint_id, minute))
        if row is None:
            row = self._rows[(endpoint_id, minute)] = [0, 0, [0] * (len(BUCKETS_MS) + 1)]
        row[0] += 1
        row[1] += 1 if error else 0
        row[2][bucket_of(latency_ms)] += 1

    def take(self) -> dict[tuple[int, datetime], list]:
        """What was recorded since the last take (the recorder starts again from nothing)."""
        rows, self._rows = self._rows, {}
        return rows

    def put_back(self, rows: dict[tuple[int, datetime], list]) -> None:
        """Rows a failed flush could not write: added to the next one."""
        for (endpoint_id, minute), (requests, errors, histogram) in rows.items():
            row = self._rows.setdefault((endpoint_id, minute), [0, 0, [0] * (len(BUCKETS_MS) + 1)])
            row[0] += requests
            row[1] += errors
            row[2] = merge([row[2], histogram])

    def __len__(self) -> int:
        return len(self._rows)


def write_minutes(rows: dict[tuple[int, datetime], list]) -> int:
    """Add ``rows`` to ``EndpointMinute`` atomically (synchronous; the number of rows written).

    PostgreSQL: one ``INSERT ... ON CONFLICT (endpoint, minute) DO UPDATE`` adding the counts and
    the histogram bucket by bucket in SQL, so several proxy processes add up correctly. Other
    databases (the SQLite demo): a read-modify-write per row in one transaction. Rows of an
    endpoint deleted meanwhile are dropped."""
    import json

    from django.db import connection, transaction

    from scheduler.models import Endpoint, EndpointMinute

    if not rows:
        return 0
    known = set(Endpoint.objects.filter(pk__in={key[0] for key in rows}).values_list("pk", flat=True))
    rows = {key: value for key, value in rows.items() if key[0] in known}
    if not rows:
        return 0
    size = len(BUCKETS_MS) + 1
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(EndpointMinute._meta.db_table)
        sql = (
            f"INSERT INTO {table} (endpoint_id, minute, requests, errors, latency_buckets) "  # noqa: S608 - our names
            "VALUES (%s, %s, %s, %s, %s::jsonb) "
            "ON CONFLICT (endpoint_id, minute) DO UPDATE SET "
            f"requests = {table}.requests + EXCLUDED.requests, "
            f"errors = {table}.errors + EXCLUDED.errors, "
            "latency_buckets = (SELECT jsonb_agg("
            f"COALESCE(({table}.latency_buckets ->> i)::bigint, 0) "
            "+ COALESCE((EXCLUDED.latency_buckets ->> i)::bigint, 0)"
            f" ORDER BY i) FROM generate_series(0, {size - 1}) AS i)"
        )
        params = [
            (endpoint_id, minute, requests, errors, json.dumps(list(histogram)))
            for (endpoint_id, minute), (requests, errors, histogram) in sorted(rows.items())
        ]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, params)
        return len(params)
    # SQLite (the one-process demo) has no row locks: a writing transaction holds the whole
    # database, so a second writer that read the same row fails with "database is locked"
    # rather than losing an update.
    with transaction.atomic():
        for (endpoint_id, minute), (requests, errors, histogram) in sorted(rows.items()):
            row, _ = EndpointMinute.objects.get_or_create(
                endpoint_id=endpoint_id, minute=minute, defaults={"latency_buckets": [0] * size}
            )
            row.requests += requests
            row.errors += errors
            row.latency_buckets = merge([row.latency_buckets, histogram])
            row.save(update_fields=["requests", "errors", "latency_buckets"])
    return len(rows)
