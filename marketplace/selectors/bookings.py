"""Booking reads: a renter's bookings, invoices, the availability calendar, earnings.

Invoices (``booking_invoice``) name the seller (settings ``INVOICE_SELLER_*``),
the buyer's billing details and VAT id (``RenterProfile``), the payment method
(the card's brand and last four digits as the gateway reported them, "USDai",
or "Test payment"), and the VAT the charge contains. Prices are VAT-inclusive:
what a renter is charged for a booking never changes with their tax status;
the invoice splits the net charge (paid less refunded) into a taxable amount
and the VAT in it, in cents, the VAT taking the rounding so the two sum to
the net charge exactly. The rule, by the buyer's billing country (the
seller's when none is given):

* outside the EU (a country not in ``INVOICE_VAT_RATES``): outside the scope
  of EU VAT, 0 %;
* an EU country other than the seller's, with a VAT id: reverse charge, 0 %
  (the customer accounts for the VAT; Art. 196 of Directive 2006/112/EC);
* any other EU buyer: VAT at the buyer's country's rate (the seller's own
  rate for a buyer in the seller's country; the one-stop-shop rule for
  electronically supplied services to consumers elsewhere in the EU).

The VAT id's format is checked where it is entered (the billing form, with
``stdnum.eu.vat``); the invoice trusts what is stored.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import QuerySet, Sum
from django.utils import timezone

from accounts.models import OwnerCompany, RenterProfile, User
from core import money
from marketplace.models import AvailabilitySlot, Booking, BookingGpu, Listing, Refund, Server, Settlement

HOUR = timedelta(hours=1)


def booking_list_for_renter(*, renter: User) -> QuerySet[Booking]:
    return (
        Booking.objects.filter(renter=renter)
        .select_related("listing__gpu_model", "server__region")
        .order_by("-start", "-id")
    )


def booking_get_for_renter(*, renter: User, public_id) -> Booking | None:
    return (
        Booking.objects.filter(renter=renter, public_id=public_id)
        .select_related("listing__gpu_model", "server__region", "server__owner")
        .first()
    )


def booking_progress(booking: Booking, now: datetime | None = None) -> int:
    """Percent of the booking window elapsed (0–100), for the progress bar."""
    now = now or timezone.now()
    total = (booking.end - booking.start).total_seconds()
    done = (min(max(now, booking.start), booking.end) - booking.start).total_seconds()
    return int(100 * done / total) if total else 0


@dataclass(frozen=True)
class InvoiceLine:
    description: str
    amount: Decimal


@dataclass(frozen=True)
class TaxLine:
    description: str
    rate: Decimal  # percent
    taxable: Decimal  # USD, the net charge without the VAT
    tax: Decimal  # USD


@dataclass(frozen=True)
class Party:
    name: str
    address: str
    country: str  # ISO 3166-1 alpha-2 ("" if not given)
    vat_id: str
    email: str = ""


@dataclass(frozen=True)
class Invoice:
    number: str
    booking: Booking
    issued: datetime
    lines: list[InvoiceLine]
    paid: Decimal
    refunded: Decimal
    net: Decimal
    test_payment: bool
    seller: Party | None = None
    buyer: Party | None = None
    payment_method: str = ""  # "Visa •••• 4242", "USDai", "Test payment", "Card"
    tax_lines: list[TaxLine] | None = None  # taxable + tax of all lines == net


def _seller() -> Party:
    return Party(
        name=settings.INVOICE_SELLER_NAME,
        address=settings.INVOICE_SELLER_ADDRESS,
        country=settings.INVOICE_SELLER_COUNTRY,
        vat_id=settings.INVOICE_SELLER_VAT_ID,
    )


def _buyer(booking: Booking) -> Party:
    profile = RenterProfile.objects.filter(user_id=booking.renter_id).select_related("user").first()
    if profile is None:
        return Party(name="", address="", country="", vat_id="")
    return Party(
        name=profile.billing_name,
        address=profile.billing_address,
        country=profile.billing_country.upper(),
        vat_id=profile.vat_id,
        email=profile.user.email,
    )


def invoice_tax_lines(*, net: Decimal, buyer_country: str, buyer_vat_id: str) -> list[TaxLine]:
    """The VAT contained in a VAT-inclusive ``net`` charge, by the rule of the module docstring."""
    rates = {code: Decimal(rate) for code, rate in settings.INVOICE_VAT_RATES.items()}
    seller = settings.INVOICE_SELLER_COUNTRY.upper()
    country = (buyer_country or seller).upper()
    net = money.cents(net)
    if country not in rates:
        return [TaxLine("Outside the scope of EU VAT (customer outside the EU)", Decimal(0), net, money.ZERO)]
    if buyer_vat_id and country != seller:
        return [
            TaxLine(
                "Reverse charge: VAT to be accounted for by the customer (Art. 196 Directive 2006/112/EC)",
                Decimal(0),
                net,
                money.ZERO,
            )
        ]
    rate = rates[country]
    taxable = money.cents(net * 100 / (100 + rate))
    return [TaxLine(f"VAT {rate.normalize():f} % ({country}), included", rate, taxable, net - taxable)]


def _payment_method(booking: Booking) -> str:
    payment = booking.payments.filter(status="succeeded").order_by("-created_at").first()
    if payment is None:
        return ""
    if payment.is_test:
        return "Test payment"
    if payment.gateway == "usdai":
        return "USDai"
    if payment.card_last4:
        return f"{payment.card_brand.title() or 'Card'} •••• {payment.card_last4}"
    return "Card"


def booking_invoice(booking: Booking) -> Invoice:
    minutes = int((booking.end - booking.start).total_seconds() // 60)
    exact = Decimal(booking.gpu_count) * minutes * booking.price_per_gpu_hour / 60
    hours = Decimal(minutes) / 60
    lines = [
        InvoiceLine(
            f"{booking.gpu_count} × {booking.listing.gpu_model.name} × {hours.normalize():f} h × "
            f"${booking.price_per_gpu_hour}/GPU-h",
            exact.quantize(money.MICRO),
        )
    ]
    if booking.amount != exact:
        lines.append(InvoiceLine("Rounding to the cent", (booking.amount - exact).quantize(money.MICRO)))
    refunds = list(booking.refunds.all())
    for refund in refunds:
        lines.append(InvoiceLine(f"Refund: {refund.get_reason_display().lower()}", -refund.amount))
    refunded = sum((r.amount for r in refunds), Decimal(0))
    buyer = _buyer(booking)
    net = booking.amount_paid - refunded
    return Invoice(
        number=f"INV-{booking.created_at:%Y%m}-{booking.pk:06d}",
        booking=booking,
        issued=booking.confirmed_at or booking.created_at,
        lines=lines,
        paid=booking.amount_paid,
        refunded=refunded,
        net=net,
        test_payment=booking.payments.filter(is_test=True).exists(),
        seller=_seller(),
        buyer=buyer,
        payment_method=_payment_method(booking),
        tax_lines=invoice_tax_lines(net=net, buyer_country=buyer.country, buyer_vat_id=buyer.vat_id),
    )


def invoices_for_renter(*, renter: User) -> list[Invoice]:
    paid = booking_list_for_renter(renter=renter).filter(amount_paid__gt=0).prefetch_related("refunds", "payments")
    return [booking_invoice(b) for b in paid]


def listing_calendar(*, listing: Listing, days: int = 14, now: datetime | None = None) -> list[dict]:
    """Free GPUs per hour for the next ``days`` days: one row per day, 24 cells.

    A cell counts the GPUs free for that whole hour; an hour outside the
    listing's availability counts zero.
    """
    now = now or timezone.now()
    first = now.replace(minute=0, second=0, microsecond=0)
    start = first.replace(hour=0)
    end = start + timedelta(days=days)
    held = list(
        BookingGpu.objects.filter(server_id=listing.server_id, held=True, start__lt=end, end__gt=start).values_list(
            "gpu_id", "start", "end"
        )
    )
    slots = (
        None
        if listing.always_available
        else list(
            AvailabilitySlot.objects.filter(listing=listing, start__lt=end, end__gt=start).values_list("start", "end")
        )
    )
    capacity = listing.gpus_in_service if listing.status == Listing.Status.ACTIVE else 0
    rows = []
    for d in range(days):
        day = start + timedelta(days=d)
        cells = []
        for h in range(24):
            t0 = day + timedelta(hours=h)
            t1 = t0 + HOUR
            if t1 <= now:
                cells.append(None)  # past
                continue
            if slots is not None and not any(s <= t0 and e >= t1 for s, e in slots):
                cells.append(0)
                continue
            busy = {gpu for gpu, s, e in held if s < t1 and e > t0}
            cells.append(max(capacity - len(busy), 0))
        rows.append({"day": day, "cells": cells})
    return rows


@dataclass(frozen=True)
class ServerEarnings:
    server: Server
    available_gpu_hours: Decimal
    booked_gpu_hours: Decimal
    utilisation: Decimal  # 0–1
    earned: Decimal
    escrow: Decimal


def _overlap_hours(pairs, since: datetime, until: datetime) -> Decimal:
    seconds = 0
    for s, e in pairs:
        lo, hi = max(s, since), min(e, until)
        if hi > lo:
            seconds += (hi - lo).total_seconds()
    return (Decimal(seconds) / 3600).quantize(Decimal("0.01"))


def owner_earnings(*, owner: OwnerCompany, since: datetime, until: datetime) -> list[ServerEarnings]:
    """Per listed server over [since, until): GPU-hours offered and booked,
    utilisation, revenue earned by delivery, and money still in escrow."""
    listings = Listing.objects.filter(server__owner=owner).select_related("server__region")
    server_ids = [listing.server_id for listing in listings]
    allocations: dict[int, list] = {}
    # Held rows are the GPU time renters kept: live and finished bookings, and
    # the paid part of one cancelled after its start. Released rows (expired,
    # cancelled before the start) were never used.
    for server_id, s, e in BookingGpu.objects.filter(
        server_id__in=server_ids, held=True, start__lt=until, end__gt=since
    ).values_list("server_id", "start", "end"):
        allocations.setdefault(server_id, []).append((s, e))
    slots: dict[int, list] = {}
    for listing_id, s, e in AvailabilitySlot.objects.filter(
        listing__in=listings, start__lt=until, end__gt=since
    ).values_list("listing_id", "start", "end"):
        slots.setdefault(listing_id, []).append((s, e))
    earned = dict(
        Settlement.objects.filter(server_id__in=server_ids, interval_end__gte=since, interval_end__lt=until)
        .values("server_id")
        .annotate(total=Sum("gross_amount"))
        .values_list("server_id", "total")
    )
    escrow_rows = (
        Booking.objects.filter(server_id__in=server_ids, status__in=Booking.PAID_LIVE)
        .values("server_id")
        .annotate(paid=Sum("amount_paid"), earned=Sum("amount_earned"), refunded=Sum("amount_refunded"))
    )
    escrow = {r["server_id"]: r["paid"] - r["earned"] - r["refunded"] for r in escrow_rows}
    result = []
    for listing in listings:
        window_hours = (
            _overlap_hours([(since, until)], since, until)
            if listing.always_available
            else _overlap_hours(slots.get(listing.pk, []), since, until)
        )
        available = window_hours * listing.gpus_in_service
        booked = _overlap_hours(allocations.get(listing.server_id, []), since, until)
        result.append(
            ServerEarnings(
                server=listing.server,
                available_gpu_hours=available,
                booked_gpu_hours=booked,
                utilisation=(booked / available).quantize(Decimal("0.0001")) if available else Decimal(0),
                earned=earned.get(listing.server_id) or Decimal(0),
                escrow=escrow.get(listing.server_id) or Decimal(0),
            )
        )
    return result


def refunds_for_booking(booking: Booking) -> QuerySet[Refund]:
    return booking.refunds.order_by("created_at")
