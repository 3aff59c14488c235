"""The operator's money page: the latest money reconciliation and its alerts."""

from dataclasses import dataclass

from financing.models import MoneyAlert, MoneyReconciliation


@dataclass(frozen=True)
class MoneyOperations:
    reconciliation: MoneyReconciliation | None  # the latest run
    alerts: list[MoneyAlert]  # open ones, newest first
    resolved: list[MoneyAlert]  # the latest resolved ones (history)


def money_operations(*, history: int = 20) -> MoneyOperations:
    related = ("raised_by", "last_seen", "cleared_by")
    return MoneyOperations(
        reconciliation=MoneyReconciliation.objects.order_by("-ran_at", "-pk").first(),
        alerts=list(MoneyAlert.objects.filter(resolved_at__isnull=True).select_related(*related)),
        resolved=list(
            MoneyAlert.objects.filter(resolved_at__isnull=False)
            .select_related(*related)
            .order_by("-resolved_at")[:history]
        ),
    )
