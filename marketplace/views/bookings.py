"""Booking pages: book, checkout, a renter's bookings, cancel, invoices, saved
cards, and an owner's earnings. Thin: a form, one service, a template.

Checkout with a card gateway (Stripe): the page gets the booking's
PaymentIntent (``booking_card_payment``) and hands its client secret and the
publishable key to ``static/js/card_payment.js`` in ``data-`` attributes (the
CSP forbids inline script); the script confirms it with Stripe.js
(``confirmCardPayment``: a new card Element or a saved card, 3-D Secure
included), shows a failure in the page, and on success goes to
``checkout_return``, which reads the PaymentIntent back and records it as the
webhook does. The offline gateway keeps the plain form that settles at once.
"""

from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Role
from accounts.permissions import role_required
from accounts.selectors import owner_company_for_user
from core.downloads import csv_download
from core.errors import ConflictError
from core.forms import form_submit
from marketplace.forms.bookings import BookingForm, CardRemoveForm, EarningsPeriodForm, PayForm
from marketplace.models import Booking, Listing
from marketplace.payments import get_gateway
from marketplace.payments.stripe_js import allow_stripe_js, stripe_js
from marketplace.selectors import bookings as booking_selectors
from marketplace.selectors.cards import saved_cards
from marketplace.services import bookings, cards
from marketplace.views.listings import render_listing_page


@role_required(Role.RENTER)
@require_POST
def booking_create(request, pk: int):
    listing = get_object_or_404(Listing.objects.select_related("server__region", "gpu_model"), pk=pk)
    form = BookingForm(request.POST)
    if done := form_submit(
        form,
        lambda d: bookings.booking_create(
            renter=request.user,
            listing=listing,
            gpu_count=d["gpu_count"],
            start=d["start"],
            end=d["end"],
            quoted_price=d["quoted_price"],
        ),
    ):
        return redirect("marketplace:checkout", public_id=done.result.public_id)
    return render_listing_page(request, listing, form, status=409 if _is_conflict(form) else 400)


def _is_conflict(form) -> bool:
    return isinstance(getattr(form, "service_error", None), ConflictError)


def _my_booking(request, public_id) -> Booking:
    booking = booking_selectors.booking_get_for_renter(renter=request.user, public_id=public_id)
    if booking is None:
        raise Http404("No such booking.")
    return booking


@role_required(Role.RENTER)
@require_http_methods(["GET", "POST"])
def checkout(request, public_id):
    booking = _my_booking(request, public_id)
    gateway = get_gateway()
    form = PayForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form_submit(
        form,
        lambda d: bookings.booking_pay(booking=booking, renter=request.user, payment_method=d["payment_method"]),
    ):
        booking.refresh_from_db()
        if booking.status == Booking.Status.CONFIRMED:
            messages.success(request, "Paid. Your GPUs are reserved.")
        else:
            messages.info(request, "Payment submitted; we will confirm it as soon as the card network does.")
        return redirect("marketplace:my_bookings")
    card_payment, card_error, stripe = None, "", stripe_js(gateway)
    if stripe is not None and booking.status == Booking.Status.PENDING_PAYMENT and request.method == "GET":
        try:
            card_payment = bookings.booking_card_payment(booking=booking, renter=request.user)
        except ValidationError as exc:
            card_error = " ".join(exc.messages)
        else:
            if card_payment.status == "succeeded":
                messages.success(request, "Paid. Your GPUs are reserved.")
                return redirect("marketplace:my_bookings")
    profile = request.user.renter_profile if hasattr(request.user, "renter_profile") else None
    context = {
        "booking": booking,
        "invoice": booking_selectors.booking_invoice(booking),
        "form": form,
        "gateway": gateway,
        "stripe": stripe,
        "card_payment": card_payment,
        "card_error": card_error,
        "saved_cards": saved_cards(user=request.user) if card_payment else [],
        "billing_name": profile.billing_name if profile else "",
        "return_url": reverse("marketplace:checkout_return", args=[booking.public_id]),
        "pay_label": f"Pay ${booking.amount:,.2f}",
        "hold_minutes_left": max(int((booking.expires_at - timezone.now()).total_seconds() // 60), 0)
        if booking.expires_at
        else None,
    }
    response = render(request, "marketplace/checkout.html", context, status=400 if form.errors else 200)
    return allow_stripe_js(response, stripe)


@role_required(Role.RENTER)
def checkout_return(request, public_id):
    """Where Stripe.js sends the renter after ``confirmCardPayment``: record what the gateway says."""
    booking = _my_booking(request, public_id)
    try:
        booking = bookings.booking_pay_return(
            booking=booking, renter=request.user, reference=request.GET.get("payment_intent", "")
        )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("marketplace:checkout", public_id=booking.public_id)
    if booking.status == Booking.Status.CONFIRMED:
        messages.success(request, "Paid. Your GPUs are reserved.")
    else:
        messages.info(request, "Payment submitted; we will confirm it as soon as the card network does.")
    return redirect("marketplace:my_bookings")


@role_required(Role.RENTER)
@require_http_methods(["GET", "POST"])
def card_list(request):
    """The renter's saved cards: add one (a SetupIntent confirmed by Stripe.js), remove one."""
    gateway = get_gateway()
    stripe = stripe_js(gateway)
    form = CardRemoveForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form_submit(
        form, lambda d: cards.card_remove(user=request.user, reference=d["card"])
    ):
        messages.success(request, "Card removed.")
        return redirect("marketplace:cards")
    setup, setup_error = None, ""
    if stripe is not None:
        try:
            setup = cards.card_setup_start(user=request.user)
        except ValidationError as exc:
            setup_error = " ".join(exc.messages)
    if request.GET.get("setup_intent"):
        messages.success(request, "Card saved: it is offered at your next checkout.")
    context = {
        "gateway": gateway,
        "stripe": stripe,
        "setup": setup,
        "setup_error": setup_error,
        "cards": saved_cards(user=request.user),
        "form": form,
    }
    response = render(request, "marketplace/cards.html", context, status=400 if form.errors else 200)
    return allow_stripe_js(response, stripe)


@role_required(Role.RENTER)
def my_bookings(request):
    now = timezone.now()
    rows = [
        (b, booking_selectors.booking_progress(b, now))
        for b in booking_selectors.booking_list_for_renter(renter=request.user)
    ]
    page = Paginator(rows, 25).get_page(request.GET.get("page"))
    return render(request, "marketplace/my_bookings.html", {"page": page, "rows": page.object_list, "now": now})


@role_required(Role.RENTER)
@require_POST
def booking_cancel(request, public_id):
    booking = _my_booking(request, public_id)
    try:
        booking = bookings.booking_cancel(booking=booking, renter=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Booking cancelled; ${booking.amount_refunded:.2f} refunded.")
    return redirect("marketplace:my_bookings")


@role_required(Role.RENTER)
def invoice(request, public_id):
    booking = _my_booking(request, public_id)
    if booking.amount_paid <= 0:
        raise Http404("No invoice: this booking was not paid.")
    context = {"invoice": booking_selectors.booking_invoice(booking)}
    return render(request, "marketplace/invoice.html", context)


@role_required(Role.RENTER)
def invoices_csv(request):
    response, writer = csv_download("infrafi-invoices.csv")
    writer.writerow(
        [
            "invoice",
            "booking",
            "issued_utc",
            "server",
            "gpu_model",
            "gpus",
            "start_utc",
            "end_utc",
            "price_per_gpu_hour",
            "paid",
            "refunded",
            "net",
            "status",
            "test_payment",
        ]
    )
    for inv in booking_selectors.invoices_for_renter(renter=request.user):
        b = inv.booking
        writer.writerow(
            [
                inv.number,
                b.public_id,
                f"{inv.issued:%Y-%m-%d %H:%M}",
                b.server.hostname,
                b.listing.gpu_model.name,
                b.gpu_count,
                f"{b.start:%Y-%m-%d %H:%M}",
                f"{b.end:%Y-%m-%d %H:%M}",
                b.price_per_gpu_hour,
                f"{inv.paid:.2f}",
                f"{inv.refunded:.2f}",
                f"{inv.net:.2f}",
                b.status,
                "yes" if inv.test_payment else "no",
            ]
        )
    return response


# --- Owner ---------------------------------------------------------------------------


def _earnings(request):
    form = EarningsPeriodForm(request.GET or None)
    days = (form.cleaned_data.get("days") if form.is_valid() else None) or 30
    until = timezone.now()
    since = until - timedelta(days=days)
    rows = booking_selectors.owner_earnings(owner=owner_company_for_user(request.user), since=since, until=until)
    return form, days, since, until, rows


@role_required(Role.OWNER)
def owner_earnings(request):
    form, days, since, until, rows = _earnings(request)
    totals = {
        "available": sum(r.available_gpu_hours for r in rows),
        "booked": sum(r.booked_gpu_hours for r in rows),
        "earned": sum(r.earned for r in rows),
        "escrow": sum(r.escrow for r in rows),
    }
    totals["utilisation"] = totals["booked"] / totals["available"] if totals["available"] else 0
    page = Paginator(sorted(rows, key=lambda r: (-r.earned, r.server.hostname)), 50).get_page(request.GET.get("page"))
    context = {
        "form": form,
        "days": days,
        "since": since,
        "until": until,
        "page": page,
        "rows": page.object_list,
        "totals": totals,
    }
    return render(request, "marketplace/owner_earnings.html", context)


@role_required(Role.OWNER)
def owner_earnings_csv(request):
    _, days, since, until, rows = _earnings(request)
    response, writer = csv_download(f"infrafi-earnings-{days}d.csv")
    writer.writerow(
        [
            "server",
            "region",
            "since_utc",
            "until_utc",
            "available_gpu_hours",
            "booked_gpu_hours",
            "utilisation",
            "earned_usd",
            "escrow_usd",
        ]
    )
    for r in rows:
        writer.writerow(
            [
                r.server.hostname,
                r.server.region.code,
                f"{since:%Y-%m-%d %H:%M}",
                f"{until:%Y-%m-%d %H:%M}",
                r.available_gpu_hours,
                r.booked_gpu_hours,
                r.utilisation,
                f"{r.earned:.6f}",
                f"{r.escrow:.6f}",
            ]
        )
    return response
