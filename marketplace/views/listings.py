"""Search and listing pages: search, a listing with its calendar and booking form,
an owner's listings, terms and availability. Thin: a form, one service, a template."""

from datetime import timedelta

from django.contrib import messages
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from accounts.models import Role
from accounts.permissions import role_required
from accounts.selectors import owner_company_for_user
from core.forms import form_submit
from marketplace.forms.bookings import BookingForm
from marketplace.forms.fields import utc_now_minute
from marketplace.forms.listings import ListingCreateForm, ListingTermsForm, SearchForm, WeeklyForm, WindowForm
from marketplace.models import AvailabilityRule, Listing, Server
from marketplace.selectors import bookings as booking_selectors
from marketplace.selectors.search import SearchQuery, listing_search
from marketplace.services import listings

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
    return render_listing_page(request, listing, form)


def render_listing_page(request, listing: Listing, form: BookingForm, status: int = 200):
    """The listing page: server, 14-day calendar and booking form (fresh, or with a failed booking's errors)."""
    context = {
        "listing": listing,
        "server": listing.server,
        "calendar": booking_selectors.listing_calendar(listing=listing),
        "hours": range(24),
        "form": form,
        "can_book": request.user.is_authenticated,
    }
    return render(request, "marketplace/listing_detail.html", context, status=status)


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
        "cpu_milli_per_gpu": listing.cpu_milli_per_gpu,
        "memory_mib_per_gpu": listing.memory_mib_per_gpu,
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
