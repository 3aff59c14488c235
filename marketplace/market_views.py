"""Renter and owner market pages: search, listing, checkout, bookings, invoices,
listings and availability, earnings. Thin: a form, one service, a template."""

import csv
from datetime import timedelta

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Role
from accounts.permissions import role_required
from accounts.selectors import owner_company_for_user
from core.errors import ConflictError
from core.forms import form_submit
from marketplace.market_forms import (
    BookingForm,
    EarningsPeriodForm,
    ListingCreateForm,
    ListingTermsForm,
    PayForm,
    SearchForm,
    WeeklyForm,
    WindowForm,
    utc_now_minute,
)
from marketplace.models import AvailabilityRule, Booking, Listing, Server
from marketplace.payments import get_gateway
from marketplace.selectors import bookings as booking_selectors
from marketplace.selectors.search import SearchQuery, listing_search
from marketplace.services import bookings, listings

RESULTS_PER_PAGE = 20


def search(request):
    form = SearchForm(request.GET or None)
    page = None
    if not form.is_bound:
        results = listing_search(SearchQuery())
    elif form.is_valid():
        results = listing_search(form.to_query())
    else:
        results = None
    if results is not None:
        page = Paginator(results, RESULTS_PER_PAGE).get_page(request.GET.get("page"))
    query_string = request.GET.copy()
    query_string.pop("page", None)
    context = {"form": form, "page": page, "query_string": query_string.urlencode()}
    return render(request, "marketplace/search.html", context, status=400 if form.errors else 200)


def listing_detail(request, pk: int):
    listing = get_object_or_404(Listing.objects.select_related("server__region", "server__owner", "gpu_model"), pk=pk)
    start = utc_now_minute().replace(minute=0) + timedelta(hours=1)
    form = BookingForm(
        initial={
            "gpu_count": 1,
            "start": start,
            "end": start + timedelta(hours=2),
            "quoted_price": listing.price_per_gpu_hour,
        }
    )
    return _listing_page(request, listing, form)


def _listing_page(request, listing: Listing, form: BookingForm, status: int = 200):
    context = {
        "listing": listing,
        "server": listing.server,
        "calendar": booking_selectors.listing_calendar(listing=listing),
        "hours": range(24),
        "form": form,
        "can_book": request.user.is_authenticated,
    }
    return render(request, "marketplace/listing_detail.html", context, status=status)


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
    return _listing_page(request, listing, form, status=409 if _is_conflict(form) else 400)


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
    context = {
        "booking": booking,
        "invoice": booking_selectors.booking_invoice(booking),
        "form": form,
        "gateway": gateway,
        "hold_minutes_left": max(int((booking.expires_at - timezone.now()).total_seconds() // 60), 0)
        if booking.expires_at
        else None,
    }
    return render(request, "marketplace/checkout.html", context, status=400 if form.errors else 200)


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
    context = {"invoice": booking_selectors.booking_invoice(booking), "renter": request.user.renter_profile}
    return render(request, "marketplace/invoice.html", context)


@role_required(Role.RENTER)
def invoices_csv(request):
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="infrafi-invoices.csv"'
    writer = csv.writer(response)
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


def _owned_listing(request, pk: int) -> Listing:
    return get_object_or_404(
        Listing.objects.select_related("server__region", "gpu_model"),
        pk=pk,
        server__owner=owner_company_for_user(request.user),
    )


@role_required(Role.OWNER)
@require_http_methods(["GET", "POST"])
def owner_listings(request):
    company = owner_company_for_user(request.user)
    unlisted = Server.objects.filter(owner=company, listing__isnull=True).order_by("hostname")
    form = ListingCreateForm(request.POST or None, servers=unlisted)
    if request.method == "POST" and form_submit(
        form, lambda d: listings.listing_create(server=d["server"], **form.terms())
    ):
        messages.success(request, "Listed. Renters can book it now.")
        return redirect("marketplace:owner_listings")
    rows = (
        Listing.objects.filter(server__owner=company)
        .select_related("server__region", "gpu_model")
        .order_by("server__hostname")
    )
    page = Paginator(rows, 50).get_page(request.GET.get("page"))
    context = {"form": form, "page": page, "listings": page.object_list, "unlisted_count": unlisted.count()}
    return render(request, "marketplace/owner_listings.html", context, status=400 if form.errors else 200)


@role_required(Role.OWNER)
@require_http_methods(["GET", "POST"])
def owner_listing_edit(request, pk: int):
    listing = _owned_listing(request, pk)
    action = request.POST.get("action") if request.method == "POST" else None
    initial = {
        "price_per_gpu_hour": listing.price_per_gpu_hour,
        "min_hours": listing.min_duration_minutes // 60,
        "max_hours": listing.max_duration_minutes // 60,
    }
    terms = ListingTermsForm(request.POST if action == "terms" else None, initial=initial)
    window = WindowForm(request.POST if action == "window" else None, prefix="window")
    weekly = WeeklyForm(request.POST if action == "weekly" else None, prefix="weekly")
    done = False
    if action == "terms":
        done = form_submit(terms, lambda d: listings.listing_update(listing=listing, **terms.terms()))
    elif action == "window":
        done = form_submit(window, lambda d: listings.availability_window_add(listing=listing, **d))
    elif action == "weekly":
        done = form_submit(
            weekly,
            lambda d: listings.availability_weekly_add(
                listing=listing, weekday=d["weekday"], start_minute=weekly.minutes()[0], end_minute=weekly.minutes()[1]
            ),
        )
    elif action in ("pause", "unpause"):
        listings.listing_set_status(
            listing=listing, status=Listing.Status.PAUSED if action == "pause" else Listing.Status.ACTIVE
        )
        done = True
    elif action == "delete_rule":
        rule = get_object_or_404(AvailabilityRule, pk=request.POST.get("rule"), listing=listing)
        listings.availability_rule_delete(rule=rule)
        done = True
    if done:
        messages.success(request, "Listing updated.")
        return redirect("marketplace:owner_listing_edit", pk=listing.pk)
    listing.refresh_from_db()
    context = {
        "listing": listing,
        "terms": terms,
        "window": window,
        "weekly": weekly,
        "rules": listing.rules.all(),
        "calendar": booking_selectors.listing_calendar(listing=listing),
        "hours": range(24),
    }
    status = 400 if (terms.errors or window.errors or weekly.errors) else 200
    return render(request, "marketplace/owner_listing_edit.html", context, status=status)


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
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="infrafi-earnings-{days}d.csv"'
    writer = csv.writer(response)
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
