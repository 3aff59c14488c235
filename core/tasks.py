"""Periodic core work (Celery beat; ``run_scheduler`` in the embedded mode)."""

from celery import shared_task

from core.idempotency import idempotency_keys_purge


@shared_task
def idempotency_keys_purge_expired() -> int:
    return idempotency_keys_purge()
