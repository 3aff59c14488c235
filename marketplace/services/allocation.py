"""The allocation change feed: one row per server whose allocation changed.

Every booking mutation and every inventory or listing change that alters what
can be placed on a server calls ``note_allocation_change`` inside its own
transaction, so the row commits (or rolls back) with the change. The
scheduler's placement engine polls the rows by increasing id and refreshes only
those servers, instead of reloading every server on each request.
"""

from collections.abc import Iterable
from datetime import timedelta

from django.utils import timezone

from marketplace.models import AllocationChange

# How long rows are kept: the engine polls every few seconds, so a day is a
# wide margin for a reader that was down (it reloads everything on a gap).
RETENTION = timedelta(days=1)


def note_allocation_change(server_ids: Iterable[int]) -> None:
    """Record that the allocation of these servers changed (one insert, in the
    caller's transaction; duplicates are written once)."""
    ids = sorted({int(server_id) for server_id in server_ids if server_id is not None})
    if ids:
        now = timezone.now()
        AllocationChange.objects.bulk_create([AllocationChange(server_id=i, changed_at=now) for i in ids])


def prune_allocation_changes(*, now=None) -> int:
    """Delete rows older than ``RETENTION``; returns how many (the bookings tick calls it)."""
    cutoff = (now or timezone.now()) - RETENTION
    deleted, _ = AllocationChange.objects.filter(changed_at__lt=cutoff).delete()
    return deleted
