"""The operator's view of the chain: the outbox, alerts and the latest reconciliation."""

from dataclasses import dataclass

from django.db.models import Count

from financing.models import ChainAlert, ChainOp, Reconciliation


@dataclass(frozen=True)
class ChainOperations:
    """What the operator's chain page shows."""

    counts: list[tuple[str, int]]  # the outbox by status (label, rows)
    oldest_open: ChainOp | None  # the row every later row waits behind
    failed: list[ChainOp]
    retried: set[str]  # keys of failed rows already queued again
    alerts: list[ChainAlert]  # open ones
    reconciliation: Reconciliation | None  # the latest


def chain_operations() -> ChainOperations:
    counts = dict(ChainOp.objects.values("status").annotate(n=Count("pk")).values_list("status", "n"))
    return ChainOperations(
        counts=[(label, counts.get(value, 0)) for value, label in ChainOp.Status.choices],
        oldest_open=ChainOp.objects.filter(status__in=ChainOp.IN_FLIGHT).order_by("pk").first(),
        failed=list(ChainOp.objects.filter(status=ChainOp.Status.FAILED).order_by("-pk")[:50]),
        retried={
            key.rsplit(":retry", 1)[0]
            for key in ChainOp.objects.filter(key__contains=":retry").values_list("key", flat=True)
        },
        alerts=list(ChainAlert.objects.filter(resolved_at__isnull=True).select_related("op").order_by("-created_at")),
        reconciliation=Reconciliation.objects.order_by("-ran_at").first(),
    )
