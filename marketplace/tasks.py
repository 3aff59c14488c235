"""Periodic marketplace work (Celery beat; ``run_scheduler`` in the embedded mode)."""

from celery import shared_task

from marketplace.services import bookings, listings


@shared_task
def bookings_tick() -> dict[str, int]:
    return bookings.bookings_tick()


@shared_task
def availability_extend() -> int:
    return listings.availability_extend_all()


@shared_task
def payments_sweep() -> dict[str, int]:
    return bookings.payments_sweep()


@shared_task
def refunds_retry() -> int:
    return bookings.refunds_retry()


@shared_task
def webhooks_retry() -> int:
    from marketplace.services.webhooks import webhooks_retry as retry

    return retry()
