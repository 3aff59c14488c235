"""Periodic core work (Celery beat; ``run_scheduler`` in the embedded mode)."""

import time

from celery import shared_task
from django.core.cache import cache

from core.idempotency import idempotency_keys_purge

# Written by ``celery_heartbeat``: its age tells /readyz (config.health) whether beat and a worker run.
HEARTBEAT_KEY = "core:celery-heartbeat"


@shared_task
def idempotency_keys_purge_expired() -> int:
    return idempotency_keys_purge()


def heartbeat_record() -> None:
    cache.set(HEARTBEAT_KEY, time.time(), timeout=None)


@shared_task
def celery_heartbeat() -> None:
    """Proves to /readyz that beat schedules and a worker runs (``config.health``)."""
    heartbeat_record()
