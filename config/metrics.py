"""Business gauges for Prometheus, read from the database at scrape time.

One collector on prometheus_client's default registry beside django-prometheus's
request metrics: bookings by status, GPU utilisation, the chain outbox's backlog and
failures, refunds pending, and the vault's NAV and cash from the ledger (no chain call).
Money stays Decimal until the exposition, which is float by format.
"""

import threading

from django.db.models import Count
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

from financing.models import ChainOp
from financing.selectors.vault import vault_books
from marketplace.models import Booking, BookingGpu, Gpu, Refund


def _gauges() -> dict[str, GaugeMetricFamily]:
    return {
        "bookings": GaugeMetricFamily("infrafi_bookings", "Bookings by status.", labels=["status"]),
        "gpus_held": GaugeMetricFamily("infrafi_gpus_held", "GPUs held by a booking now."),
        "gpus_in_service": GaugeMetricFamily("infrafi_gpus_in_service", "GPUs in service (status available)."),
        "utilisation": GaugeMetricFamily(
            "infrafi_gpu_utilisation_ratio", "GPUs held now over GPUs in service (0 when none is in service)."
        ),
        "outbox_backlog": GaugeMetricFamily(
            "infrafi_chain_outbox_backlog", "Chain operations pending, signed or mined, not yet confirmed."
        ),
        "outbox_failed": GaugeMetricFamily("infrafi_chain_outbox_failed", "Chain operations failed."),
        "refunds_pending": GaugeMetricFamily("infrafi_refunds_pending", "Refunds not yet sent or confirmed."),
        "vault_nav": GaugeMetricFamily("infrafi_vault_nav_usd", "The vault's NAV in USD (ledger)."),
        "vault_cash": GaugeMetricFamily("infrafi_vault_cash_usd", "The vault's cash in USD (ledger)."),
    }


class BusinessCollector(Collector):
    def describe(self):
        # Names only: registering must not query the database.
        return list(_gauges().values())

    def collect(self):
        gauges = _gauges()
        counts = dict(Booking.objects.order_by().values_list("status").annotate(n=Count("id")))
        for status in Booking.Status.values:
            gauges["bookings"].add_metric([status], counts.get(status, 0))
        now = timezone.now()
        held = BookingGpu.objects.filter(held=True, start__lte=now, end__gt=now).values("gpu").distinct().count()
        in_service = Gpu.objects.filter(status=Gpu.Status.AVAILABLE).count()
        gauges["gpus_held"].add_metric([], held)
        gauges["gpus_in_service"].add_metric([], in_service)
        gauges["utilisation"].add_metric([], held / in_service if in_service else 0.0)
        gauges["outbox_backlog"].add_metric([], ChainOp.objects.filter(status__in=ChainOp.IN_FLIGHT).count())
        gauges["outbox_failed"].add_metric([], ChainOp.objects.filter(status=ChainOp.Status.FAILED).count())
        gauges["refunds_pending"].add_metric([], Refund.objects.filter(status=Refund.Status.PENDING).count())
        books = vault_books()
        gauges["vault_nav"].add_metric([], float(books.nav))
        gauges["vault_cash"].add_metric([], float(books.cash))
        yield from gauges.values()


_registered = False
_lock = threading.Lock()


def register() -> None:
    """Add the collector to the default registry once per process (a second registration raises)."""
    global _registered
    with _lock:
        if not _registered:
            REGISTRY.register(BusinessCollector())
            _registered = True
