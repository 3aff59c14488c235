"""Proof of revenue checked by a real browser: Chromium's WebCrypto recomputes a
settlement's leaf and follows its proof to the root anchored on chain.

Skipped outside CI when Chromium is missing, like ``test_browser``.
"""

from datetime import timedelta
from decimal import Decimal

import pytest

from financing.services.epochs import epoch_close
from financing.services.revenue import settlements_journal
from marketplace.models import Settlement
from marketplace.services import bookings
from tests.chain_fixtures import drain
from tests.factories import make_listing, make_owner, make_renter, next_hour
from tests.test_browser import ARTIFACTS, app_server, browser_page  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser


@pytest.fixture
def anchored_settlement(catalogue, chain):
    """Three settlements journaled, closed into an epoch and its root anchored on the
    in-process chain: all through the ORM, before Playwright starts."""
    listing = make_listing(make_owner(), price="2.00")
    renter = make_renter()
    rows = []
    for hours in (2, 6, 10):
        start = next_hour(hours)
        booking = bookings.booking_create(
            renter=renter, listing=listing, gpu_count=1, start=start, end=start + timedelta(hours=2)
        )
        rows.append(
            Settlement.objects.create(
                booking=booking,
                server=booking.server,
                interval_start=start,
                interval_end=start + timedelta(hours=1),
                gpu_seconds=3600,
                gross_amount=Decimal("2.00"),
            )
        )
    settlements_journal()
    epoch = epoch_close()
    drain()
    epoch.anchor_op.refresh_from_db()
    assert epoch.anchor_op.status == "confirmed"
    return rows[1], epoch


@pytest.mark.django_db(transaction=True)
def test_a_visitor_verifies_a_settlement_in_the_browser(app_server, anchored_settlement, browser_page):  # noqa: F811
    settlement, epoch = anchored_settlement
    page = browser_page

    page.goto(f"{app_server.url}/proof/settlements/{settlement.pk}/")
    assert page.locator("#anchored-root").inner_text() == epoch.root
    assert page.locator("#server-check").inner_text().startswith("✓ matches")

    page.click("#verify")
    page.wait_for_selector("#verify-result.verify-ok")

    result = page.locator("#verify-result").inner_text()
    assert result.startswith("✓ Verified") and epoch.root in result
    page.screenshot(path=str(ARTIFACTS / "proof.png"), full_page=True)
