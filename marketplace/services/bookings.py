"""Bookings: quote, hold, pay, run, deliver, settle, refund.

Lifecycle: ``pending_payment`` (specific GPUs held for 15 minutes) →
``confirmed`` (paid; the money sits in escrow) → ``active`` (from the start)
→ ``completed`` (at the end; undelivered time refunded), or ``cancelled``,
``expired`` (unpaid in time) or ``refunded`` (nothing delivered).

Escrow: a payment becomes the owner's revenue only as usage is delivered.
The scheduler reports delivered GPU-seconds with ``booking_record_usage``
(idempotent by key); each report becomes a ``Settlement`` worth the
delivered share of the booking's amount. Shares are computed cumulatively
(``money.pro_rata`` of the running total, rounded down to the micro-dollar)
so they never drift and sum to the amount when everything is delivered. At
the end the rest of the escrow is refunded, rounded down to the cent; the
sub-cent remainder is earned by the owner on the final settlement's
``rounding_adjustment`` so that paid = earned + refunded exactly.

No GPU is held twice for overlapping time: every booking locks its server's
row first (bookings of one server are serialised, so exactly the feasible
ones succeed), and on PostgreSQL an exclusion constraint backs it up. Rows
are locked through ``marketplace.lock_objects``, in the order of
``core/locks.py`` (server, then booking, then payment).
Network calls to the payment gateway happen outside any transaction:
reserve, commit, call, then confirm.

Refunds: a refund is reserved (its ``Refund`` row) and counted in
``amount_refunded`` in the one transaction that changes the booking's totals,
in whole cents (the sub-cent rest is earned), and sent after the commit.
``amount_refunded`` counts pending and succeeded refunds only: one the
gateway rejects is marked failed, leaves the count (its money is back in
escrow), is logged as an alert and, when a retry can help, is sent again by
``refunds_retry`` with backoff. ``refunds_retry`` is also the recovery path
of a process that stops between the commit and the gateway call.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from core import money
from core.errors import ConflictError
from marketplace.lock_objects import booking_lock, bookings_stale_lock, payment_lock, server_lock
from marketplace.models import (
    AvailabilitySlot,
    Booking,
    BookingGpu,
    Gpu,
    Listing,
    Payment,
    Refund,
    Server,
    Settlement,
    UsageRecord,
)
from marketplace.payments import get_gateway
from marketplace.payments.base import GatewayError, PaymentDeclined, SavedCard
from marketplace.services.allocation import note_allocation_change, prune_allocation_changes

logger = logging.getLogger(__name__)

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Quote:
    listing_id: int
    gpu_count: int
    start: datetime
    end: datetime
    price_per_gpu_hour: Decimal
    minutes: int
    exact_amount: Decimal  # N × hours × price, unrounded
    amount: Decimal  # what is charged: the exact amount in whole cents (half-up)

    @property
    def hours(self) -> Decimal:
        return Decimal(self.minutes) / 60

    @property
    def rounding(self) -> Decimal:
        return self.amount - self.exact_amount


def quote_amount(*, gpu_count: int, minutes: int, price_per_gpu_hour: Decimal) -> tuple[Decimal, Decimal]:
    """(exact, charged): N × minutes/60 × price exactly, and that in whole cents.

    With cent prices a whole number of hours is always exact; a window of odd
    minutes may leave a fraction of a cent, rounded half-up and shown on the
    invoice as rounding.
    """
    exact = Decimal(gpu_count) * Decimal(minutes) * price_per_gpu_hour / 60
    return exact, money.cents(exact)


def _is_covered(listing: Listing, start: datetime, end: datetime) -> bool:
    if listing.always_available:
        return True
    return AvailabilitySlot.objects.filter(listing=listing, start__lte=start, end__gte=end).exists()


def booking_quote(
    *, listing: Listing, gpu_count: int, start: datetime, end: datetime, now: datetime | None = None
) -> Quote:
    """Validate a request against the listing's terms and price it.

    Raises ``ValidationError`` with field messages; it does not check that
    GPUs are free (``booking_create`` does, under a lock).
    """
    now = now or timezone.now()
    errors: dict[str, str] = {}
    if listing.status != Listing.Status.ACTIVE:
        errors["listing"] = "This listing is paused by its owner and cannot be booked."
    for name, value in (("start", start), ("end", end)):
        if value.second or value.microsecond:
            errors[name] = "Times have minute resolution: use whole minutes."
    if "start" not in errors and start < now.replace(second=0, microsecond=0):
        errors["start"] = "The window starts in the past."
    if end <= start:
        errors["end"] = "The end must be after the start."
    minutes = int((end - start).total_seconds() // 60)
    if "end" not in errors:
        if minutes < listing.min_duration_minutes:
            errors["end"] = f"The shortest booking on this listing is {listing.min_duration_minutes} minutes."
        elif minutes > listing.max_duration_minutes:
            errors["end"] = f"The longest booking on this listing is {listing.max_duration_minutes} minutes."
        elif end > now + timedelta(days=settings.BOOKING_HORIZON_DAYS):
            errors["end"] = f"Bookings can end at most {settings.BOOKING_HORIZON_DAYS} days ahead."
    if gpu_count < 1:
        errors["gpu_count"] = "Book at least one GPU."
    elif gpu_count > listing.gpus_in_service:
        errors["gpu_count"] = f"This server has {listing.gpus_in_service} GPU(s) in service."
    if not errors and not _is_covered(listing, start, end):
        errors["start"] = "The window is outside the listing's availability; see its calendar."
    if errors:
        raise ValidationError(errors)
    exact, amount = quote_amount(gpu_count=gpu_count, minutes=minutes, price_per_gpu_hour=listing.price_per_gpu_hour)
    return Quote(
        listing_id=listing.pk,
        gpu_count=gpu_count,
        start=start,
        end=end,
        price_per_gpu_hour=listing.price_per_gpu_hour,
        minutes=minutes,
        exact_amount=exact,
        amount=amount,
    )


def _release(booking: Booking, *, note: bool = True) -> set[int]:
    """Release the booking's GPU holds; returns the servers they were on (and,
    with ``note``, records the change for them in the allocation feed)."""
    held = BookingGpu.objects.filter(booking=booking, held=True)
    servers = set(held.values_list("server_id", flat=True).distinct())
    if servers:
        held.update(held=False)
        if note:
            note_allocation_change(servers)
    return servers


def _expire(locked: Booking, now: datetime, *, note: bool = True) -> None:
    """End an unpaid hold (the caller holds the booking's row lock)."""
    locked.status = Booking.Status.EXPIRED
    locked.finished_at = now
    locked.save(update_fields=["status", "finished_at"])
    _release(locked, note=note)


def _expire_stale_on_server(server_id: int, now: datetime) -> None:
    """Expire the server's unpaid holds past their time; the caller records the
    server's change (it is about to change it anyway)."""
    for booking in bookings_stale_lock(server_id=server_id, now=now):
        _expire(booking, now, note=False)


def _cores(milli: int) -> str:
    """Millicores as cores for a message: 12, or 12.5."""
    return f"{Decimal(milli) / 1000:.3f}".rstrip("0").rstrip(".")


def _gib(mib: int) -> str:
    return f"{Decimal(mib) / 1024:.1f}".rstrip("0").rstrip(".")


def booking_share(
    *, listing: Listing, server: Server, gpu_count: int, cpu_milli: int = 0, memory_mib: int = 0
) -> tuple[int, int]:
    """(cpu_milli, memory_mib) a booking of ``gpu_count`` GPUs takes on the listing's
    server: the listing's share per GPU (or the even split) × GPUs, or the renter's
    minimum if larger."""
    cpu_per_gpu, memory_per_gpu = listing.share_per_gpu(server)
    return max(int(cpu_milli), cpu_per_gpu * gpu_count), max(int(memory_mib), memory_per_gpu * gpu_count)


def _check_share_free(
    *,
    server: Server,
    start: datetime,
    end: datetime,
    cpu_milli: int,
    memory_mib: int,
    field: str,
    exclude_booking: int | None = None,
) -> None:
    """Raise ``ConflictError`` unless ``cpu_milli`` and ``memory_mib`` fit beside the
    bookings holding GPUs of the server during [start, end), at their peak.

    The peak is the largest sum of the shares of bookings held at the same
    instant (a sweep over the few overlapping holds), so two bookings one
    after the other do not both count against a third that spans them. The
    caller holds the server's lock."""
    holding = BookingGpu.objects.filter(server_id=server.pk, held=True, start__lt=end, end__gt=start)
    if exclude_booking:
        holding = holding.exclude(booking_id=exclude_booking)
    events: list[tuple[datetime, int, int]] = []
    for row in holding.values("booking_id", "start", "end", "booking__cpu_milli", "booking__memory_mib").distinct():
        cpu, memory = row["booking__cpu_milli"], row["booking__memory_mib"]
        events.append((max(row["start"], start), cpu, memory))
        events.append((min(row["end"], end), -cpu, -memory))
    # Ends sort before starts at the same instant: the windows are half-open.
    events.sort(key=lambda e: (e[0], e[1] > 0 or e[2] > 0))
    cpu_now = memory_now = cpu_peak = memory_peak = 0
    for _, cpu, memory in events:
        cpu_now += cpu
        memory_now += memory
        cpu_peak = max(cpu_peak, cpu_now)
        memory_peak = max(memory_peak, memory_now)
    cpu_free = max(0, server.cpu_milli - cpu_peak)
    memory_free = max(0, server.memory_mib - memory_peak)
    if cpu_milli > cpu_free:
        raise ConflictError(
            {
                field: f"Only {_cores(cpu_free)} of {_cores(server.cpu_milli)} CPU cores are free on that server "
                f"for that time (this booking needs {_cores(cpu_milli)}); choose fewer GPUs, another time or "
                "another server."
            },
            code="conflict",
        )
    if memory_mib > memory_free:
        raise ConflictError(
            {
                field: f"Only {_gib(memory_free)} of {_gib(server.memory_mib)} GiB of RAM are free on that server "
                f"for that time (this booking needs {_gib(memory_mib)}); choose fewer GPUs, another time or "
                "another server."
            },
            code="conflict",
        )


def free_gpu_ids(*, server_id: int, start: datetime, end: datetime, exclude_booking: int | None = None) -> list[int]:
    """GPUs of the server in service and not held by any booking during [start, end), by slot."""
    busy = BookingGpu.objects.filter(server_id=server_id, held=True, start__lt=end, end__gt=start)
    if exclude_booking:
        busy = busy.exclude(booking_id=exclude_booking)
    return list(
        Gpu.objects.filter(server_id=server_id, status=Gpu.Status.AVAILABLE)
        .exclude(pk__in=busy.values("gpu_id"))
        .order_by("slot")
        .values_list("pk", flat=True)
    )


def booking_create(
    *,
    renter: User,
    listing: Listing,
    gpu_count: int,
    start: datetime,
    end: datetime,
    quoted_price: Decimal | None = None,
    now: datetime | None = None,
    cpu_milli: int = 0,
    memory_mib: int = 0,
) -> Booking:
    """Hold ``gpu_count`` specific GPUs of the listing's server for [start, end).

    The booking also takes its share of the server's CPU and memory
    (``booking_share``: the listing's share × GPUs, or the renter's minimum
    ``cpu_milli``/``memory_mib`` if larger), checked free for the window under
    the same server lock.

    The booking waits for payment for ``BOOKING_PAYMENT_HOLD_MINUTES`` and
    then expires by itself. ``quoted_price`` (the price the renter saw)
    must still be the listing's price. Raises ``ValidationError`` for bad
    input and ``ConflictError`` when the GPUs, CPU or memory are no longer free.
    """
    now = now or timezone.now()
    if cpu_milli < 0 or memory_mib < 0:
        raise ValidationError({"cpu_milli": "The CPU and memory asked for cannot be negative."})
    quote = booking_quote(listing=listing, gpu_count=gpu_count, start=start, end=end, now=now)
    if quoted_price is not None and Decimal(quoted_price) != quote.price_per_gpu_hour:
        raise ValidationError(
            {
                "quoted_price": f"The price changed from ${quoted_price} to ${quote.price_per_gpu_hour} per GPU-hour "
                "since your quote; review the new total and book again."
            }
        )
    try:
        with transaction.atomic():
            # One booking at a time per server: the check below and the insert
            # cannot interleave with another booking of the same GPUs.
            server = server_lock(listing.server_id)
            _expire_stale_on_server(listing.server_id, now)
            free = free_gpu_ids(server_id=listing.server_id, start=start, end=end)
            if len(free) < gpu_count:
                raise ConflictError(
                    {
                        "gpu_count": f"Only {len(free)} GPU(s) of this server are free for that window; "
                        "choose fewer GPUs or another time."
                    },
                    code="conflict",
                )
            cpu_taken, memory_taken = booking_share(
                listing=listing, server=server, gpu_count=gpu_count, cpu_milli=cpu_milli, memory_mib=memory_mib
            )
            _check_share_free(
                server=server, start=start, end=end, cpu_milli=cpu_taken, memory_mib=memory_taken, field="gpu_count"
            )
            booking = Booking.objects.create(
                renter=renter,
                listing=listing,
                server_id=listing.server_id,
                gpu_count=gpu_count,
                start=start,
                end=end,
                price_per_gpu_hour=quote.price_per_gpu_hour,
                amount=quote.amount,
                expires_at=now + timedelta(minutes=settings.BOOKING_PAYMENT_HOLD_MINUTES),
                cpu_milli=cpu_taken,
                memory_mib=memory_taken,
            )
            BookingGpu.objects.bulk_create(
                BookingGpu(booking=booking, gpu_id=gpu_id, server_id=listing.server_id, start=start, end=end)
                for gpu_id in free[:gpu_count]
            )
            note_allocation_change([listing.server_id])
    except IntegrityError as exc:
        # The exclusion constraint: another writer held one of these GPUs.
        raise ConflictError(
            {"gpu_count": "These GPUs were just booked by someone else; try again."}, code="conflict"
        ) from exc
    return booking


# --- Payment --------------------------------------------------------------------


def _payment_reserve(*, booking: Booking, renter: User, gateway, now: datetime) -> Payment:
    """The booking's pending payment (or a new attempt under a new idempotency key), committed."""
    if booking.renter_id != renter.pk:
        raise ValidationError({"booking": "This booking is not yours."})
    with transaction.atomic():
        locked = booking_lock(booking.pk)
        if locked.status != Booking.Status.PENDING_PAYMENT:
            raise ValidationError(
                {"booking": f"This booking is {locked.get_status_display().lower()}; nothing to pay."}
            )
        if locked.expires_at and locked.expires_at <= now:
            raise ValidationError({"booking": "The hold on these GPUs expired; book again."})
        payment = locked.payments.filter(status=Payment.Status.PENDING).first()
        if payment is None:
            attempt = locked.payments.count() + 1
            payment = Payment.objects.create(
                booking=locked,
                gateway=gateway.name,
                is_test=gateway.is_test,
                idempotency_key=f"booking-{locked.public_id}-pay-{attempt}",
                amount=locked.amount,
            )
        Booking.objects.filter(pk=locked.pk).update(gateway=gateway.name)
    return payment


def _customer_or_error(renter: User, gateway) -> str:
    # Imported here: cards sits beside this module and reads accounts only.
    from marketplace.services.cards import renter_customer

    try:
        return renter_customer(user=renter, gateway_name=gateway.name)
    except GatewayError as exc:
        raise ValidationError({"payment_method": "The payment service did not answer; try again."}) from exc


def _charge(*, booking: Booking, payment: Payment, gateway, payment_method: str, customer: str, renter: User):
    """The gateway call of a reserved payment; a decline marks it failed (a field error)."""
    try:
        result = gateway.charge(
            booking_id=str(booking.public_id),
            amount=payment.amount,
            idempotency_key=payment.idempotency_key,
            payment_method=payment_method,
            description=f"InfraFi booking {booking.public_id}",
            customer=customer,
            receipt_email=renter.email if gateway.browser_cards else "",
        )
    except PaymentDeclined as exc:
        Payment.objects.filter(pk=payment.pk).update(
            status=Payment.Status.FAILED, reference=exc.reference or "", failure_message=str(exc)[:300]
        )
        raise ValidationError({"payment_method": f"Your card was declined: {exc}"}) from exc
    except GatewayError as exc:
        # Stays pending: a retry reuses the idempotency key; the webhook may still confirm it.
        raise ValidationError({"payment_method": "The payment service did not answer; try again."}) from exc
    Payment.objects.filter(pk=payment.pk).update(reference=result.reference)
    return result


def booking_pay(
    *,
    booking: Booking,
    renter: User,
    payment_method: str = "",
    gateway_name: str | None = None,
    now: datetime | None = None,
) -> Booking:
    """Charge the booking's amount through the gateway and confirm it.

    A retried or concurrent call reuses the pending payment's idempotency
    key, so the gateway never charges twice. With a card gateway the charge
    carries the renter's Customer and ``receipt_email``; without a
    ``payment_method`` it leaves an unconfirmed PaymentIntent for the browser
    (``booking_card_payment`` is that flow). Recovery: a process that stops
    after the gateway charged but before the success is recorded leaves the
    payment pending; the webhook or ``payments_sweep`` records it.
    """
    gateway = get_gateway(gateway_name)
    payment = _payment_reserve(booking=booking, renter=renter, gateway=gateway, now=now or timezone.now())
    customer = _customer_or_error(renter, gateway) if gateway.browser_cards else ""
    result = _charge(
        booking=booking,
        payment=payment,
        gateway=gateway,
        payment_method=payment_method,
        customer=customer,
        renter=renter,
    )
    if result.status == "succeeded":
        payment_succeeded(gateway=gateway.name, reference=result.reference, amount=result.amount, card=result.card)
    booking.refresh_from_db()
    return booking


@dataclass(frozen=True)
class CardPayment:
    """A booking's payment waiting for the browser: Stripe.js confirms ``client_secret``."""

    booking: Booking
    reference: str  # the PaymentIntent id
    client_secret: str
    status: str  # the PaymentIntent's status: "requires_payment_method", "requires_action", "succeeded", ...
    amount: Decimal


def booking_card_payment(*, booking: Booking, renter: User, now: datetime | None = None) -> CardPayment:
    """The booking's PaymentIntent, created without a payment method, for Stripe.js to confirm.

    Under the pending payment's idempotency key: reloading the checkout page
    reads the same PaymentIntent back (``retrieve``), so one booking has one
    live PaymentIntent. One that failed meanwhile (declined, authentication
    refused, canceled) marks its payment failed and a new attempt starts, so a
    booking whose payment failed stays payable. One that succeeded is
    recorded here through ``payment_succeeded``, as the webhook would.
    Recovery: a process that stops after the gateway created the
    PaymentIntent but before its reference is stored leaves the payment
    pending without one; the next page load makes the same request under the
    same key, which the gateway answers with that PaymentIntent. The browser's
    confirmation is recorded by the return page (``booking_pay_return``), the
    webhook or ``payments_sweep``, whichever comes first.
    """
    gateway = get_gateway()
    if not gateway.browser_cards:
        raise ValidationError({"payment_method": "This gateway takes no card in the browser."})
    now = now or timezone.now()
    customer = _customer_or_error(renter, gateway)
    for _attempt in range(2):
        payment = _payment_reserve(booking=booking, renter=renter, gateway=gateway, now=now)
        if not payment.reference:
            result = _charge(
                booking=booking, payment=payment, gateway=gateway, payment_method="", customer=customer, renter=renter
            )
            return CardPayment(booking, result.reference, result.client_secret, result.status, result.amount)
        try:
            result = gateway.retrieve(reference=payment.reference)
        except PaymentDeclined as exc:
            payment_failed(gateway=gateway.name, reference=payment.reference, message=str(exc))
            continue
        except GatewayError as exc:
            raise ValidationError({"payment_method": "The payment service did not answer; try again."}) from exc
        if result.status == "canceled":
            payment_failed(gateway=gateway.name, reference=payment.reference, message="The payment was canceled.")
            continue
        if result.status == "succeeded":
            payment_succeeded(gateway=gateway.name, reference=result.reference, amount=result.amount, card=result.card)
            booking.refresh_from_db()
        return CardPayment(booking, result.reference, result.client_secret, result.status, result.amount)
    raise ValidationError({"payment_method": "The payment could not be started; reload the page."})


def booking_pay_return(*, booking: Booking, renter: User, reference: str) -> Booking:
    """The browser is back from ``confirmCardPayment``: read the PaymentIntent and record what it says.

    The same path as the webhook (``payment_succeeded`` / ``payment_failed``), so
    whichever comes first records the payment and the other changes nothing;
    the webhook stays the confirmation of record when the return never comes.
    """
    if booking.renter_id != renter.pk:
        raise ValidationError({"booking": "This booking is not yours."})
    payment = booking.payments.filter(reference=reference).first() if reference else None
    if payment is None:
        raise ValidationError({"payment_method": "This payment is not one of this booking's."})
    gateway = get_gateway(payment.gateway)
    try:
        result = gateway.retrieve(reference=reference)
    except PaymentDeclined as exc:
        payment_failed(gateway=payment.gateway, reference=reference, message=str(exc))
        raise ValidationError({"payment_method": f"Your card was declined: {exc}"}) from exc
    except GatewayError as exc:
        raise ValidationError(
            {"payment_method": "The payment service did not answer; your booking is confirmed as soon as it does."}
        ) from exc
    if result.status == "succeeded":
        payment_succeeded(gateway=payment.gateway, reference=reference, amount=result.amount, card=result.card)
    elif result.status == "canceled":
        payment_failed(gateway=payment.gateway, reference=reference, message="The payment was canceled.")
    booking.refresh_from_db()
    return booking


def payment_succeeded(
    *, gateway: str, reference: str, amount: Decimal, booking_public_id: str = "", card: SavedCard | None = None
) -> Booking | None:
    """Record a successful payment (from the charge call, the return page or a webhook); idempotent.

    ``card`` (when the caller read it from the gateway) is kept on the payment
    for the invoice, also on a payment recorded before without it.

    A payment that arrives after its booking expired, was cancelled or was
    already paid is refunded at once: the GPUs may be gone. The refund is
    reserved in the transaction that records the payment, so the money is
    never paid in without a refund to send; it is sent after the commit, and
    ``refunds_retry`` sends it if the process stops in between.
    """
    refund = None
    with transaction.atomic():
        payment = _payment_of(gateway=gateway, reference=reference, booking_public_id=booking_public_id)
        if payment is not None:
            # Booking before Payment (core/locks.py): found without a lock, read again under both.
            booking = booking_lock(payment.booking_id)
            found_by_booking = payment.reference != reference
            payment = payment_lock(payment.pk)
            if found_by_booking and payment.status == Payment.Status.FAILED:
                payment = None  # the booking's pending payment, failed meanwhile: not this one
        if payment is None:
            logger.warning("payment %s/%s matches no booking", gateway, reference)
            return None
        if card is not None and not payment.card_last4:
            payment.card_brand, payment.card_last4 = card.brand[:20], card.last4[:4]
            payment.save(update_fields=["card_brand", "card_last4", "updated_at"])
        if payment.status == Payment.Status.SUCCEEDED:
            return booking
        payment.reference = reference
        payment.status = Payment.Status.SUCCEEDED
        payment.failure_message = ""
        payment.save(update_fields=["status", "reference", "failure_message", "updated_at"])
        booking.amount_paid = booking.amount_paid + payment.amount
        if booking.status == Booking.Status.PENDING_PAYMENT:
            booking.status = Booking.Status.CONFIRMED
            booking.confirmed_at = timezone.now()
            booking.expires_at = None
        else:
            refund = _refund_reserve(
                booking,
                amount=payment.amount,
                reason=Refund.Reason.CANCELLATION,
                key=f"late-payment-{payment.pk}",
                payment=payment,
            )
        booking.save(update_fields=["amount_paid", "amount_refunded", "status", "confirmed_at", "expires_at"])
    if refund is not None:
        refund_send(refund=refund)
    booking.refresh_from_db()
    return booking


def _payment_of(*, gateway: str, reference: str, booking_public_id: str) -> Payment | None:
    """The payment a success is about, read without a lock: the one with the reference,
    else the booking's pending payment (a webhook that overtook our own record of the reference)."""
    payment = Payment.objects.filter(gateway=gateway, reference=reference).first()
    if payment is None and booking_public_id:
        payment = Payment.objects.filter(
            gateway=gateway, booking__public_id=booking_public_id, status=Payment.Status.PENDING
        ).first()
    return payment


def payment_failed(*, gateway: str, reference: str, message: str = "") -> None:
    """A payment failed (webhook). A success already recorded is never undone."""
    Payment.objects.filter(gateway=gateway, reference=reference, status=Payment.Status.PENDING).update(
        status=Payment.Status.FAILED, failure_message=message[:300]
    )


_GATEWAY_PAYMENT_FAILED = ("canceled",)


def payments_sweep(*, now: datetime | None = None, batch: int = 200) -> dict[str, int]:
    """Periodic: read back booking payments left pending and record what the gateway says.

    The recovery path of ``booking_pay`` when the process stops (or the
    gateway's answer is lost) after the charge: a payment pending for longer
    than ``PAYMENT_SWEEP_AFTER_MINUTES`` that has a reference is read back
    (``retrieve``). Succeeded is recorded by ``payment_succeeded``, failed or
    canceled by ``payment_failed``: the very paths of the webhooks, so
    whichever of the sweep, a concurrent sweep or the webhook comes first
    records it and the others change nothing (``payment_succeeded`` locks the
    booking, then the payment, and returns when it already succeeded). A
    payment still processing or waiting for the renter is left alone; past
    ``PAYMENT_SWEEP_MAX_AGE_HOURS`` it is no longer read back, and its
    booking's hold runs out through ``bookings_tick``.

    A payment without a reference (the process stopped before the gateway
    answered) is not charged again: the payment method of the first request
    is not stored, so the same request cannot be presented under its
    idempotency key. It is logged and left to the webhook, which finds it by
    its booking, or to the renter paying again under the same key. No lock is
    held during a gateway call. Returns how many succeeded, failed, or are
    still pending.
    """
    now = now or timezone.now()
    after = timedelta(minutes=settings.PAYMENT_SWEEP_AFTER_MINUTES)
    max_age = timedelta(hours=settings.PAYMENT_SWEEP_MAX_AGE_HOURS)
    done = {"succeeded": 0, "failed": 0, "pending": 0}
    stale = Payment.objects.filter(
        status=Payment.Status.PENDING, created_at__lt=now - after, created_at__gte=now - max_age
    )
    for payment in stale.order_by("pk")[:batch]:
        if not payment.reference:
            logger.warning(
                "payment %s of booking %s is pending without a gateway reference; not charged again",
                payment.pk,
                payment.booking_id,
            )
            done["pending"] += 1
            continue
        try:
            result = get_gateway(payment.gateway).retrieve(reference=payment.reference)
        except PaymentDeclined as exc:
            payment_failed(gateway=payment.gateway, reference=payment.reference, message=f"Declined: {exc}")
        except GatewayError as exc:
            log = logger.warning if exc.retryable else logger.error
            log("payment %s: the gateway could not read back %s: %s", payment.pk, payment.reference, exc)
        else:
            if result.status == "succeeded":
                payment_succeeded(gateway=payment.gateway, reference=payment.reference, amount=result.amount)
            elif result.status in _GATEWAY_PAYMENT_FAILED:
                payment_failed(
                    gateway=payment.gateway, reference=payment.reference, message="The payment was canceled."
                )
        payment.refresh_from_db()
        done[payment.status] += 1
    return done


# --- Refunds --------------------------------------------------------------------


REFUND_MAX_ATTEMPTS = 5
REFUND_RETRY_BACKOFF = timedelta(minutes=5)  # doubled after each failed attempt
REFUND_RETRY_BACKOFF_MAX = timedelta(days=1)
_GATEWAY_FAILED = ("failed", "canceled")


def _refund_reserve(
    locked: Booking, *, amount: Decimal, reason: str, key: str, payment: Payment | None = None
) -> Refund | None:
    """Reserve a refund of ``amount`` (whole cents) and count it on the booking.

    The caller holds the booking's row lock, runs this in the transaction
    that changes the booking's totals and saves ``amount_refunded`` with
    them: a refund is counted if and only if its row exists. Sending is the
    caller's next step, after the commit (``refund_send``). Returns None when
    there is nothing to refund.
    """
    if amount != money.cents_down(amount):
        raise ValueError(f"a refund is whole cents, not {amount}")
    if amount <= 0:
        return None
    payment = payment or locked.payments.filter(status=Payment.Status.SUCCEEDED).order_by("created_at").first()
    if payment is None:
        return None
    refund = Refund.objects.create(
        booking=locked,
        payment=payment,
        idempotency_key=f"booking-{locked.public_id}-refund-{key}",
        amount=amount,
        reason=reason,
    )
    locked.amount_refunded = locked.amount_refunded + amount
    return refund


def refund_send(*, refund: Refund, now: datetime | None = None) -> Refund:
    """Send a reserved (pending) refund to the gateway and record its answer; safe to retry.

    Each attempt has its own idempotency key at the gateway, so resending a
    pending refund never refunds twice. A refund the gateway refuses for
    good (``GatewayError(retryable=False)``) or reports ``failed`` is marked
    failed (see ``_refund_failed``); a gateway that cannot be reached leaves
    it pending for ``refunds_retry``. Call it outside any transaction.
    """
    refund = Refund.objects.select_related("payment").get(pk=refund.pk)
    if refund.status != Refund.Status.PENDING:
        return refund
    gateway = get_gateway(refund.payment.gateway)
    try:
        result = gateway.refund(
            payment_reference=refund.payment.reference, amount=refund.amount, idempotency_key=refund.gateway_key
        )
    except GatewayError as exc:
        if exc.retryable:
            logger.warning("refund %s not sent yet: %s", refund.idempotency_key, exc)
            return refund
        return _refund_record(refund, status="failed", message=str(exc), retryable=False, now=now)
    return _refund_record(
        refund, status=result.status, reference=result.reference, message="The gateway refused the refund.", now=now
    )


def _refund_record(
    refund: Refund,
    *,
    status: str,
    reference: str = "",
    message: str = "",
    retryable: bool = True,
    now: datetime | None = None,
) -> Refund:
    """Apply what the gateway says of one refund (its answer, or a webhook naming it).

    ``status`` is the gateway's (``RefundResult.status``): succeeded, failed
    or canceled decide the refund; anything else leaves it pending. Every
    change of a refund's status happens under its booking's row lock, so a
    send and a webhook cannot both decide it.
    """
    with transaction.atomic():
        locked = booking_lock(refund.booking_id)
        refund = Refund.objects.select_related("payment").get(pk=refund.pk)
        if refund.status != Refund.Status.PENDING:
            if refund.status == Refund.Status.SUCCEEDED and status in _GATEWAY_FAILED:
                # Already journaled as sent: only an operator can undo that.
                logger.error(
                    "ALERT refund %s of booking %s succeeded, now reported %s: %s",
                    refund.reference,
                    locked.public_id,
                    status,
                    message,
                )
            return refund
        if reference:
            refund.reference = reference
        if status == "succeeded":
            refund.status = Refund.Status.SUCCEEDED
        elif status in _GATEWAY_FAILED:
            _refund_failed(locked, refund, message=message, retryable=retryable, now=now or timezone.now())
        refund.save(update_fields=["reference", "status", "failure_message", "next_attempt_at"])
    return refund


def _refund_failed(locked: Booking, refund: Refund, *, message: str, retryable: bool, now: datetime) -> None:
    """Mark a pending refund failed: it no longer counts as refunded, and an operator is alerted.

    ``amount_refunded`` counts pending and succeeded refunds only, so the
    refused amount is back in the booking's escrow, where the ledger holds
    it too (only succeeded refunds are journaled). A retryable failure gets
    a ``next_attempt_at`` (exponential backoff, ``REFUND_MAX_ATTEMPTS`` in
    all); otherwise it waits for an operator (admin: refunds, status failed).
    """
    refund.status = Refund.Status.FAILED
    refund.failure_message = message[:300]
    refund.next_attempt_at = None
    if retryable and refund.attempt < REFUND_MAX_ATTEMPTS:
        refund.next_attempt_at = now + min(REFUND_RETRY_BACKOFF * 2 ** (refund.attempt - 1), REFUND_RETRY_BACKOFF_MAX)
    locked.amount_refunded = locked.amount_refunded - refund.amount
    locked.save(update_fields=["amount_refunded"])
    logger.error(
        "ALERT refund %s of booking %s (%s USD, attempt %s) failed: %s; %s",
        refund.idempotency_key,
        locked.public_id,
        refund.amount,
        refund.attempt,
        message,
        f"retried at {refund.next_attempt_at.isoformat()}" if refund.next_attempt_at else "an operator must act",
    )


def _refund_again(*, refund: Refund, now: datetime) -> Refund | None:
    """Reserve a failed refund again (a new attempt, a new idempotency key), then send it."""
    with transaction.atomic():
        locked = booking_lock(refund.booking_id)
        refund = Refund.objects.get(pk=refund.pk)
        if refund.status != Refund.Status.FAILED or refund.next_attempt_at is None or refund.next_attempt_at > now:
            return None
        if refund.amount > locked.escrow:
            # Earned meanwhile (the booking ran on): what is left is not the renter's to take back.
            refund.next_attempt_at = None
            refund.save(update_fields=["next_attempt_at"])
            logger.error(
                "ALERT refund %s of booking %s exceeds its escrow %s; an operator must act",
                refund.idempotency_key,
                locked.public_id,
                locked.escrow,
            )
            return None
        refund.status = Refund.Status.PENDING
        refund.attempt = refund.attempt + 1
        refund.reference = ""
        refund.next_attempt_at = None
        refund.save(update_fields=["status", "attempt", "reference", "next_attempt_at"])
        locked.amount_refunded = locked.amount_refunded + refund.amount
        locked.save(update_fields=["amount_refunded"])
    return refund_send(refund=refund, now=now)


def refunds_retry(*, now: datetime | None = None) -> int:
    """Periodic: resend refunds the gateway has not confirmed, and failed ones that are due.

    This is the recovery path of every refund: a refund is reserved (and
    counted) in the transaction that decides it and sent after the commit,
    so a process that stops in between leaves a pending row, sent here.
    Returns how many refunds succeeded.
    """
    now = now or timezone.now()
    succeeded = 0
    for refund in Refund.objects.filter(status=Refund.Status.PENDING).order_by("pk"):
        succeeded += refund_send(refund=refund, now=now).status == Refund.Status.SUCCEEDED
    due = Refund.objects.filter(status=Refund.Status.FAILED, next_attempt_at__lte=now).order_by("pk")
    for refund in due:
        again = _refund_again(refund=refund, now=now)
        succeeded += again is not None and again.status == Refund.Status.SUCCEEDED
    return succeeded


def refund_event_apply(
    *, gateway: str, payment_reference: str, refund_reference: str, refund_status: str, amount: Decimal
) -> Refund | None:
    """A refund webhook: apply the event's status to the one refund it names.

    The refund is matched by its id at the gateway (``Refund.reference``).
    An event that names no refund (a Charge without its refunds listed)
    confirms the payment's sent pending refunds only when the total it
    reports refunded is exactly what was sent. An event for a refund whose id
    is not recorded yet, while one of the payment's refunds awaits its id,
    raises ``RefundNotRecorded`` so that the stored event is handled again.
    """
    if not refund_reference:
        _refunds_confirmed_by_total(gateway=gateway, payment_reference=payment_reference, total=amount)
        return None
    refund = Refund.objects.filter(payment__gateway=gateway, reference=refund_reference).first()
    if refund is None:
        awaiting = Refund.objects.filter(
            payment__gateway=gateway,
            payment__reference=payment_reference,
            status=Refund.Status.PENDING,
            reference="",
        )
        if awaiting.exists():
            raise RefundNotRecorded(f"refund {refund_reference} is not recorded yet")
        logger.warning("refund %s/%s matches no refund", gateway, refund_reference)
        return None
    return _refund_record(
        refund, status=refund_status, message=f"The gateway reported the refund {refund_status or 'unknown'}."
    )


class RefundNotRecorded(Exception):
    """A refund event arrived before the refund's gateway id was recorded; handle it later."""


def _refunds_confirmed_by_total(*, gateway: str, payment_reference: str, total: Decimal) -> None:
    payment = Payment.objects.filter(gateway=gateway, reference=payment_reference).first()
    if payment is None:
        return
    with transaction.atomic():
        booking_lock(payment.booking_id)
        refunds = list(payment.refunds.exclude(status=Refund.Status.FAILED).exclude(reference=""))
        sent = [r for r in refunds if r.status == Refund.Status.PENDING]
        if sent and sum((r.amount for r in refunds), Decimal(0)) == total:
            Refund.objects.filter(pk__in=[r.pk for r in sent]).update(status=Refund.Status.SUCCEEDED)
        else:
            logger.info("refund event of %s/%s (%s refunded) confirms no refund", gateway, payment_reference, total)


# --- Delivery and settlement ------------------------------------------------------


def booking_record_usage(
    *, booking: Booking, key: str, interval_start: datetime, interval_end: datetime, gpu_seconds: int
) -> Settlement | None:
    """Turn delivered GPU-seconds into earned revenue; replaying a key changes nothing.

    Returns the settlement created for this report (None for a replay, or
    when nothing is left to earn).
    """
    if gpu_seconds < 0 or interval_end < interval_start:
        raise ValidationError({"gpu_seconds": "Usage must be a non-negative amount over an ordered interval."})
    if UsageRecord.objects.filter(key=key).exists():
        return None
    try:
        with transaction.atomic():
            locked = booking_lock(booking.pk)
            if locked.status not in Booking.PAID_LIVE:
                UsageRecord.objects.create(
                    booking=locked,
                    key=key,
                    interval_start=interval_start,
                    interval_end=interval_end,
                    gpu_seconds=gpu_seconds,
                )
                return None
            usage = UsageRecord.objects.create(
                booking=locked,
                key=key,
                interval_start=interval_start,
                interval_end=interval_end,
                gpu_seconds=gpu_seconds,
            )
            total = locked.gpu_seconds_payable
            delivered = min(locked.delivered_gpu_seconds + gpu_seconds, total)
            if total <= 0:  # everything booked was lost and refunded: nothing left to earn
                return None
            earned_total = money.pro_rata(locked.amount_paid - locked.amount_refunded, delivered, total)
            gross = max(earned_total - locked.amount_earned, Decimal(0))
            locked.delivered_gpu_seconds = delivered
            locked.amount_earned = locked.amount_earned + gross
            if locked.status == Booking.Status.CONFIRMED:
                locked.status = Booking.Status.ACTIVE
                locked.started_at = locked.started_at or interval_start
            locked.save(update_fields=["delivered_gpu_seconds", "amount_earned", "status", "started_at"])
            if gross == 0:
                return None
            return Settlement.objects.create(
                booking=locked,
                server_id=locked.server_id,
                usage=usage,
                interval_start=interval_start,
                interval_end=interval_end,
                gpu_seconds=gpu_seconds,
                gross_amount=gross,
            )
    except IntegrityError:
        # A concurrent report with the same key won; this one is its replay.
        return None


def _settle_remainder(locked: Booking, *, at: datetime) -> None:
    """Earn what is left in escrow once the final refund is counted: its sub-cent
    remainder, or the unrefunded part of a cancelled hour."""
    rest = locked.amount_paid - locked.amount_earned - locked.amount_refunded
    if rest > 0:
        Settlement.objects.create(
            booking=locked,
            server_id=locked.server_id,
            interval_start=at,
            interval_end=at,
            gpu_seconds=0,
            gross_amount=rest,
            rounding_adjustment=rest if rest < money.CENT else Decimal(0),
        )
        locked.amount_earned = locked.amount_earned + rest


def booking_complete(*, booking: Booking, now: datetime | None = None) -> Booking:
    """At the end: refund undelivered time (to the cent, rounded down) and close.

    The refund is reserved with the booking's new totals in one transaction
    and sent after the commit; ``refunds_retry`` is the recovery path.
    """
    now = now or timezone.now()
    with transaction.atomic():
        locked = booking_lock(booking.pk)
        if locked.status not in Booking.PAID_LIVE or locked.end > now:
            return locked
        amount = money.cents_down(locked.escrow)
        refund = _refund_reserve(locked, amount=amount, reason=Refund.Reason.UNDELIVERED, key="final")
        _settle_remainder(locked, at=locked.end)
        nothing_delivered = locked.delivered_gpu_seconds == 0 and locked.amount_paid > 0
        locked.status = Booking.Status.REFUNDED if nothing_delivered else Booking.Status.COMPLETED
        locked.finished_at = now
        locked.save(update_fields=["amount_earned", "amount_refunded", "status", "finished_at"])
    if refund is not None:
        refund_send(refund=refund)
    locked.refresh_from_db()
    return locked


def booking_cancel(*, booking: Booking, renter: User, now: datetime | None = None) -> Booking:
    """Cancel: free before the start (full refund); after it, unused whole hours are refunded.

    After the start the GPUs are released from the end of the hour in which
    the renter cancelled; that hour and the time before it stay paid. The
    booking keeps its booked window (the invoice bills it, then lists the
    refund); its GPU holds end early. The refund is whole cents, reserved with
    the booking's new totals in one transaction and sent after the commit
    (recovery: ``refunds_retry``).
    """
    now = now or timezone.now()
    if booking.renter_id != renter.pk:
        raise ValidationError({"booking": "This booking is not yours."})
    with transaction.atomic():
        locked = booking_lock(booking.pk)
        if locked.status == Booking.Status.PENDING_PAYMENT:
            locked.status = Booking.Status.CANCELLED
            locked.finished_at = now
            locked.save(update_fields=["status", "finished_at"])
            _release(locked)
            return locked
        if locked.status not in Booking.PAID_LIVE:
            raise ValidationError({"booking": f"A {locked.get_status_display().lower()} booking cannot be cancelled."})
        if now < locked.start:
            due = locked.escrow
            new_end = None
        else:
            unused_hours = int((locked.end - now) // HOUR)
            if unused_hours < 1:
                raise ValidationError({"booking": "Less than an hour remains; there is nothing to refund."})
            due = min(Decimal(locked.gpu_count) * unused_hours * locked.price_per_gpu_hour, locked.escrow)
            new_end = locked.end - unused_hours * HOUR
        # What can be sent: whole cents. The sub-cent rest is earned (``_settle_remainder``).
        amount = money.cents_down(due)
        refund = _refund_reserve(locked, amount=amount, reason=Refund.Reason.CANCELLATION, key="cancel")
        _settle_remainder(locked, at=now)
        locked.status = Booking.Status.CANCELLED
        locked.finished_at = now
        if new_end is not None:
            shortened = BookingGpu.objects.filter(booking=locked)
            note_allocation_change(shortened.filter(held=True).values_list("server_id", flat=True).distinct())
            shortened.update(end=new_end)
        else:
            _release(locked)
        locked.save(update_fields=["amount_earned", "amount_refunded", "status", "finished_at"])
    if refund is not None:
        refund_send(refund=refund)
    locked.refresh_from_db()
    return locked


# --- Failures and failover (called by the scheduler) -------------------------------


def booking_interrupt(*, booking: Booking, failed_at: datetime, resumed_at: datetime | None, key: str) -> Refund | None:
    """A failure took the booking's GPUs away at ``failed_at``; refund the lost time now.

    ``resumed_at`` is when replacement GPUs were booked (failover), or None
    when there are none: then everything from the failure to the end is
    lost and the holds on the failed server end at ``failed_at``. The lost
    GPU-seconds leave the payable total, so the delivered time before and
    after still earns the owner exactly its share (see
    ``booking_record_usage``). Replaying ``key`` changes nothing.
    """
    with transaction.atomic():
        locked = booking_lock(booking.pk)
        if locked.status not in Booking.PAID_LIVE:
            return None
        idempotency_key = f"booking-{locked.public_id}-refund-downtime-{key}"
        if Refund.objects.filter(idempotency_key=idempotency_key).exists():
            return None
        failed_at = max(failed_at, locked.start)
        until = min(resumed_at or locked.end, locked.end)
        lost = locked.gpu_count * max(0, int((until - failed_at).total_seconds()))
        lost = min(lost, locked.gpu_seconds_payable - locked.delivered_gpu_seconds)
        if resumed_at is None:
            cut = BookingGpu.objects.filter(booking=locked, held=True, end__gt=failed_at)
            note_allocation_change(cut.values_list("server_id", flat=True).distinct())
            cut.update(end=failed_at)
        payment = locked.payments.filter(status=Payment.Status.SUCCEEDED).order_by("created_at").first()
        if lost <= 0 or payment is None:
            return None
        # The lost share of what is still payable, to the cent, rounded down.
        amount = money.cents_down(
            money.pro_rata(
                locked.amount_paid - locked.amount_refunded - locked.amount_earned,
                lost,
                locked.gpu_seconds_payable - locked.delivered_gpu_seconds,
            )
        )
        if amount <= 0:  # under a cent: the final settlement refunds undelivered time anyway
            return None
        # The refund is reserved in the same transaction as the booking's totals,
        # so a crash cannot count money as refunded without a refund to send.
        refund = _refund_reserve(
            locked, amount=amount, reason=Refund.Reason.DOWNTIME, key=f"downtime-{key}", payment=payment
        )
        locked.lost_gpu_seconds = locked.lost_gpu_seconds + lost
        locked.save(update_fields=["lost_gpu_seconds", "amount_refunded"])
    return refund_send(refund=refund)


def booking_move(*, booking: Booking, listing: Listing, at: datetime) -> Booking:
    """Re-book the rest of the window, [at, end), on another listing's server (failover).

    The renter keeps the booked price (the scheduler only moves to GPUs
    priced at or below it), the new owner earns the delivered time from
    ``at`` on, and the holds on the old server end at ``at``. Raises
    ``ConflictError`` when the target's GPUs are no longer free.
    """
    with transaction.atomic():
        # Server before Booking (core/locks.py): the target server, then the booking, read again under its lock.
        target = server_lock(listing.server_id)
        locked = booking_lock(booking.pk)
        if locked.status not in Booking.PAID_LIVE or at >= locked.end:
            raise ValidationError({"booking": "Only a confirmed or active booking with time left can be moved."})
        if listing.server_id == locked.server_id:
            raise ValidationError({"listing": "The booking already runs on this server."})
        if listing.status != Listing.Status.ACTIVE or listing.price_per_gpu_hour > locked.price_per_gpu_hour:
            raise ValidationError({"listing": "The replacement must be active and cost no more than the booked price."})
        start = max(at, locked.start)
        free = free_gpu_ids(server_id=listing.server_id, start=start, end=locked.end)
        if len(free) < locked.gpu_count:
            raise ConflictError({"listing": "The replacement's GPUs are no longer free."}, code="conflict")
        # The share is re-derived for the target (its listing's share, or the
        # even split there), never below what the renter had.
        cpu_taken, memory_taken = booking_share(
            listing=listing,
            server=target,
            gpu_count=locked.gpu_count,
            cpu_milli=locked.cpu_milli,
            memory_mib=locked.memory_mib,
        )
        _check_share_free(
            server=target,
            start=start,
            end=locked.end,
            cpu_milli=cpu_taken,
            memory_mib=memory_taken,
            field="listing",
            exclude_booking=locked.pk,
        )
        cut = BookingGpu.objects.filter(booking=locked, held=True, end__gt=start)
        touched = set(cut.values_list("server_id", flat=True).distinct()) | {listing.server_id}
        cut.update(end=start)
        try:
            with transaction.atomic():
                BookingGpu.objects.bulk_create(
                    BookingGpu(booking=locked, gpu_id=gpu_id, server_id=listing.server_id, start=start, end=locked.end)
                    for gpu_id in free[: locked.gpu_count]
                )
        except IntegrityError as exc:
            raise ConflictError({"listing": "The replacement's GPUs were just booked."}, code="conflict") from exc
        locked.listing = listing
        locked.server_id = listing.server_id
        locked.cpu_milli = cpu_taken
        locked.memory_mib = memory_taken
        locked.save(update_fields=["listing", "server", "cpu_milli", "memory_mib"])
        note_allocation_change(touched)
    return locked


# --- Time passing ------------------------------------------------------------------


def bookings_tick(*, now: datetime | None = None) -> dict[str, int]:
    """Periodic: expire unpaid holds, start confirmed bookings, complete ended ones
    (``BOOKING_USAGE_GRACE_SECONDS`` after their end, once the last usage is in),
    and prune the allocation change feed (rows older than a day)."""
    now = now or timezone.now()
    expired = 0
    for booking in Booking.objects.filter(status=Booking.Status.PENDING_PAYMENT, expires_at__lte=now):
        with transaction.atomic():
            locked = booking_lock(booking.pk)
            if locked.status == Booking.Status.PENDING_PAYMENT and locked.expires_at <= now:
                _expire(locked, now)
                expired += 1
    started = Booking.objects.filter(status=Booking.Status.CONFIRMED, start__lte=now, end__gt=now).update(
        status=Booking.Status.ACTIVE, started_at=now
    )
    completed = 0
    closing = now - timedelta(seconds=settings.BOOKING_USAGE_GRACE_SECONDS)
    for booking in Booking.objects.filter(status__in=Booking.PAID_LIVE, end__lte=closing):
        booking_complete(booking=booking, now=now)
        completed += 1
    prune_allocation_changes(now=now)
    return {"expired": expired, "started": started, "completed": completed}
