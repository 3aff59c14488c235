"""The marketplace's row locks, taken here and nowhere else (Saleor's ``lock_objects.py``).

Each function locks rows with ``select_for_update()`` and returns them; call it
inside ``transaction.atomic()``. A service that needs several follows the one
global order of ``core/locks.py``: Server → Listing → Booking → Payment, and by
primary key within a model. A service that finds a row of a later model first
(a webhook names a payment, and the payment names its booking) reads it without
a lock, locks the earlier rows, then locks the later one and reads it again.
Settlements and refunds are claimed by financing with ``skip_locked`` and are
never locked here.
"""

from datetime import datetime

from django.db.models import QuerySet

from marketplace.models import Booking, Listing, Payment, Server


def server_lock(server_id: int) -> Server:
    """The server's row, locked: its bookings, moves onto it and GPU changes go one at a time."""
    return Server.objects.select_for_update().get(pk=server_id)


def listing_lock(*, server_id: int) -> Listing | None:
    """The server's listing, locked (None if the server is not listed)."""
    return Listing.objects.select_for_update().filter(server_id=server_id).first()


def booking_lock(booking_id: int) -> Booking:
    """The booking's row, locked, as it is now."""
    return Booking.objects.select_for_update().get(pk=booking_id)


def bookings_stale_lock(*, server_id: int, now: datetime) -> QuerySet[Booking]:
    """The server's unpaid holds that ran out by ``now``, locked in primary-key order."""
    return (
        Booking.objects.filter(server_id=server_id, status=Booking.Status.PENDING_PAYMENT, expires_at__lte=now)
        .order_by("pk")
        .select_for_update()
    )


def payment_lock(payment_id: int) -> Payment:
    """The payment's row, locked, as it is now (lock its booking first)."""
    return Payment.objects.select_for_update().get(pk=payment_id)
