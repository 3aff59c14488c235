"""Periodic financing work (Celery beat; ``run_scheduler`` in the embedded mode)."""

from celery import shared_task

from financing.services.revenue import ledger_pull as pull


@shared_task
def ledger_pull() -> dict[str, int]:
    return pull()


@shared_task
def appraisals_daily() -> int:
    from financing.services.collateral import appraisals_daily as run

    return run()


@shared_task
def loans_service() -> dict[str, int]:
    from financing.services.delinquency import loans_service as run

    return run()
