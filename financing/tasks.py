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


@shared_task
def chain_send() -> dict[str, int]:
    from financing.services.outbox import chain_send as run

    return run()


@shared_task
def vault_service() -> bool:
    from financing.services.vault import vault_service as run

    return run() is not None


@shared_task
def epoch_close() -> int | None:
    from financing.services.epochs import epoch_close as run

    epoch = run()
    return epoch.number if epoch else None


@shared_task
def vault_daily() -> dict:
    from financing.services.vault import vault_daily as run

    return {k: str(v) for k, v in run().items()}


@shared_task
def chain_reconcile() -> int:
    from financing.services.reconcile import chain_reconcile as run

    return run().mismatches
