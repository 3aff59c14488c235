"""Periodic financing work (Celery beat; ``run_scheduler`` in the embedded mode)."""

from celery import shared_task

from financing.services import chain_watch as chain_watcher
from financing.services import collateral, delinquency, epochs, outbox, payouts, reconcile, revenue, vault, wallets
from financing.services import money_reconcile as money_reconciler


@shared_task
def ledger_pull() -> dict[str, int]:
    return revenue.ledger_pull()


@shared_task
def appraisals_daily() -> int:
    return collateral.appraisals_daily()


@shared_task
def loans_service() -> dict[str, int]:
    return delinquency.loans_service()


@shared_task
def chain_send() -> dict[str, int | str]:
    return outbox.chain_send()


@shared_task
def vault_service() -> bool:
    return vault.vault_service() is not None


@shared_task
def epoch_close() -> int | None:
    epoch = epochs.epoch_close()
    return epoch.number if epoch else None


@shared_task
def vault_daily() -> dict:
    return {k: str(v) for k, v in vault.vault_daily().items()}


@shared_task
def chain_reconcile() -> int:
    return reconcile.chain_reconcile().mismatches


@shared_task
def usdai_purchases_sweep() -> dict[str, int]:
    return wallets.usdai_purchases_sweep()


@shared_task
def money_reconcile() -> int:
    return money_reconciler.money_reconcile().mismatches


@shared_task
def chain_watch() -> int:
    return chain_watcher.chain_watch().applied


@shared_task
def payouts_weekly() -> int | None:
    """The last complete ISO week's payout run (idempotent: hourly is fine), and USDai payouts confirmed."""
    run = payouts.payouts_weekly()
    payouts.payouts_confirm()
    return run.pk if run else None
