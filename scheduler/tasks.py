"""Periodic scheduler work (Celery beat; ``run_scheduler`` in the embedded mode).

``jobs_tick`` (beat, every ``SCHEDULER_TICK_SECONDS``) fans out: one
``cluster_tick`` task per cluster and one ``unplaced_tick``, so a slow or
unreachable cluster delays only its own jobs. Each fanned-out task

* expires (``SCHEDULER_TICK_EXPIRES_SECONDS``): a tick still queued when the
  next one is due is dropped rather than run late, twice;
* has a soft and a hard time limit (``SCHEDULER_CLUSTER_TICK_SOFT_SECONDS``,
  ``..._HARD_SECONDS``): a hung API server cannot hold a worker for ever (the
  backend's own timeouts and retries come first);
* is single-flight per cluster: it runs only if it can ``cache.add`` the
  cluster's lock key (Redis in production; the lock outlives the hard limit by
  a little so that a killed task's lock expires on its own), and it releases
  only a lock it still holds (its token). A tick that finds the lock taken
  returns ``{"skipped": 1}``: the running one does the work.

In the embedded mode Celery runs eagerly, so the fan-out runs each tick in
turn in the caller's process.
"""

import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from celery import shared_task
from django.conf import settings
from django.core.cache import cache

from scheduler.models import Cluster
from scheduler.services import cluster_tick as ticks
from scheduler.services import clusters

logger = logging.getLogger(__name__)

LOCK_PREFIX = "scheduler:tick-lock:"
UNPLACED = "unplaced"


def lock_key(name: str | int) -> str:
    return f"{LOCK_PREFIX}{name}"


@contextmanager
def single_flight(name: str | int) -> Iterator[bool]:
    """Hold the lock ``name`` while the block runs; yields whether it was acquired."""
    key, token = lock_key(name), uuid.uuid4().hex
    acquired = cache.add(key, token, timeout=settings.SCHEDULER_CLUSTER_TICK_HARD_SECONDS + 10)
    try:
        yield acquired
    finally:
        if acquired and cache.get(key) == token:  # not one that expired and was taken by another
            cache.delete(key)


def _locked(name: str | int, run: Callable[[], dict[str, int]]) -> dict[str, int]:
    with single_flight(name) as acquired:
        if not acquired:
            logger.info("tick %s is already running; skipped", name)
            return {"skipped": 1}
        return run()


@shared_task(
    soft_time_limit=settings.SCHEDULER_CLUSTER_TICK_SOFT_SECONDS,
    time_limit=settings.SCHEDULER_CLUSTER_TICK_HARD_SECONDS,
)
def cluster_tick(cluster_id: int) -> dict[str, int]:
    return _locked(cluster_id, lambda: ticks.cluster_tick(cluster_id=cluster_id))


@shared_task(
    soft_time_limit=settings.SCHEDULER_CLUSTER_TICK_SOFT_SECONDS,
    time_limit=settings.SCHEDULER_CLUSTER_TICK_HARD_SECONDS,
)
def unplaced_tick() -> dict[str, int]:
    return _locked(UNPLACED, lambda: ticks.unplaced_tick())


@shared_task
def jobs_tick() -> dict[str, int]:
    """Fan out one ``cluster_tick`` per cluster, then the ``unplaced_tick``; returns how many were sent."""
    expires = settings.SCHEDULER_TICK_EXPIRES_SECONDS
    ids = list(Cluster.objects.order_by("pk").values_list("pk", flat=True))
    for cluster_id in ids:
        cluster_tick.apply_async((cluster_id,), expires=expires)
    unplaced_tick.apply_async((), expires=expires)
    return {"clusters": len(ids), "unplaced": 1}


@shared_task
def clusters_sync() -> dict[str, int]:
    return clusters.clusters_sync()
