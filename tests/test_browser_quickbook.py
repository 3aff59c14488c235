"""Quick book in a real browser: a renter asks for GPUs, sees the placement cards and books one.

Playwright drives Debian's Chromium on a live server. The data (listings on a
simulated cluster, the renter's session) is made before Playwright starts, as
in ``test_browser_cards``; database reads after it run in a thread of their own.
Screenshots go to ``artifacts/browser/``.
"""
# ruff: noqa: F811

from decimal import Decimal

import pytest
from django.test import Client

from marketplace.models import Booking, Listing
from scheduler.services import clusters
from tests.factories import make_listing, make_owner, make_renter
from tests.test_browser import ARTIFACTS, app_server, browser_page  # noqa: F401
from tests.test_browser_cards import _db, _open

pytestmark = pytest.mark.browser


@pytest.fixture
def market(catalogue):
    """Three H100 servers on a simulated cluster (best fit, cheap, reliable) and a logged-in renter."""
    owner = make_owner()
    servers = []
    for hostname, gpus, price, reliability in (
        ("fit", 4, "2.50", "0.9500"),
        ("cheap", 8, "1.50", "0.8000"),
        ("steady", 8, "3.00", "0.9990"),
    ):
        listing = make_listing(owner, gpu_count=gpus, price=price, hostname=hostname)
        Listing.objects.filter(pk=listing.pk).update(reliability=Decimal(reliability))
        servers.append(listing.server)
    clusters.cluster_create_simulated(owner=owner.owner_membership.company, name="sim", servers=servers)
    renter = make_renter(email="quick.renter@example.com")
    client = Client()
    client.force_login(renter)
    return renter, client.cookies["sessionid"].value


@pytest.mark.django_db(transaction=True)
def test_a_renter_finds_placements_and_books_the_cheapest(app_server, market, browser_page):
    renter, session = market
    page = browser_page
    _open(page, app_server.url, session, "/quick-book/")
    model = page.locator("#id_gpu_model")
    assert "H100 80GB (20 GPUs free now)" in model.inner_text()
    model.select_option(label="H100 80GB (20 GPUs free now)")
    page.fill("#id_gpu_count", "4")
    page.fill("#id_hours", "2")
    page.get_by_role("button", name="Find placements").click()

    cards = page.locator("#options .option")
    assert cards.count() == 3
    assert [cards.nth(i).locator("h3").inner_text() for i in range(3)] == [
        "Best placement",
        "Cheapest",
        "Most reliable",
    ]
    cheapest = cards.nth(1)
    assert cheapest.locator(".hostname").inner_text() == "cheap"
    assert cheapest.locator(".total").inner_text() == "$12.00"
    page.screenshot(path=str(ARTIFACTS / "quick-book-options.png"), full_page=True)
    cheapest.get_by_role("button", name="Book this").click()

    page.wait_for_url("**/bookings/*/checkout/")
    booking = _db(lambda: Booking.objects.select_related("server").get(renter=renter))
    assert page.url.endswith(f"/bookings/{booking.public_id}/checkout/")
    assert booking.server.hostname == "cheap" and booking.amount == Decimal("12.00")
    assert booking.status == Booking.Status.PENDING_PAYMENT
    page.screenshot(path=str(ARTIFACTS / "quick-book-checkout.png"), full_page=True)
