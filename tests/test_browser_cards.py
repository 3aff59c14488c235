"""Card payments in a real browser: the checkout page's own Stripe.js code path against localstripe.

Playwright drives Chromium on the live app in Stripe mode, with
``STRIPE_JS_URL`` pointing at localstripe's Stripe.js (patched to confirm
PaymentIntents as Stripe's does: ``tests/localstripe_server.py``). The page
mounts the card Element, ``static/js/card_payment.js`` calls
``confirmCardPayment`` with the PaymentIntent's client secret, and localstripe
opens its 3-D Secure modal for the cards that need it. Data (the renter, a
listing, bookings, the session cookie) is made before Playwright starts.
Screenshots go to ``artifacts/browser/``.
"""
# ruff: noqa: F811

from datetime import timedelta

import pytest
from django.test import Client

from marketplace.models import Booking, Payment
from marketplace.services import bookings
from tests.factories import make_listing, make_owner, make_renter, next_hour

# The browser fixtures of test_browser: every test takes them as arguments (F811).
from tests.test_browser import ARTIFACTS, app_server, browser_page  # noqa: F401

pytestmark = pytest.mark.browser

THREE_DS_CARD = "4000002760003184"


@pytest.fixture
def card_mode(stripe_mode, settings, app_server):
    settings.STRIPE_PUBLISHABLE_KEY = stripe_mode.publishable_key
    settings.STRIPE_JS_URL = stripe_mode.js_url
    stripe_mode.add_webhook_endpoint(app_server.url + "/webhooks/stripe/", ["payment_intent.succeeded"])
    return stripe_mode


@pytest.fixture
def renter_booking(catalogue):
    renter = make_renter(email="card.renter@example.com")
    listing = make_listing(make_owner(), price="2.50", gpu_count=4)
    start = next_hour(3)
    booking = bookings.booking_create(
        renter=renter, listing=listing, gpu_count=2, start=start, end=start + timedelta(hours=2)
    )
    client = Client()
    client.force_login(renter)
    return booking, client.cookies["sessionid"].value


def _db(read):
    """Run ``read`` (ORM code) in a thread of its own: inside Playwright's sync API this thread
    runs an event loop, where Django refuses database calls. Its connection is closed after."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    def run():
        try:
            return read()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


def _booking(booking) -> tuple:
    """The booking as stored now: status, amount paid, amount, and its payments' (status, brand, last4)."""

    def read():
        b = Booking.objects.get(pk=booking.pk)
        payments = [(p.status, p.card_brand, p.card_last4) for p in b.payments.order_by("pk")]
        return b.status, b.amount_paid, b.amount, payments

    return _db(read)


def _open(page, base_url: str, session: str, path: str) -> None:
    page.context.add_cookies([{"name": "sessionid", "value": session, "url": base_url}])
    page.goto(base_url + path)


def _type_card(page, number: str) -> None:
    element = page.locator("#card-element")
    element.locator("input[placeholder=number]").fill(number)
    element.locator("input[placeholder=exp_month]").fill("12")
    element.locator("input[placeholder=exp_year]").fill("34")
    element.locator("input[placeholder=cvc]").fill("123")
    element.locator("input[placeholder=postal_code]").fill("10115")


def _checkout(booking) -> str:
    return f"/bookings/{booking.public_id}/checkout/"


@pytest.mark.django_db(transaction=True)
def test_a_card_that_needs_3d_secure_pays_the_booking_once_the_challenge_is_completed(
    card_mode,
    app_server,
    renter_booking,
    browser_page,
):
    booking, session = renter_booking
    page = browser_page
    _open(page, app_server.url, session, _checkout(booking))
    assert page.locator("#test-payment").count() == 0
    _type_card(page, THREE_DS_CARD)
    page.screenshot(path=str(ARTIFACTS / "card-checkout.png"), full_page=True)
    page.locator("#pay").click()

    # localstripe's 3-D Secure challenge, in the page as Stripe.js shows its own
    page.get_by_role("button", name="Complete authentication").click()
    page.wait_for_url("**/bookings/")
    assert "Paid. Your GPUs are reserved." in page.locator(".messages").inner_text()
    assert "Confirmed" in page.locator("#bookings").inner_text()
    page.screenshot(path=str(ARTIFACTS / "card-paid.png"), full_page=True)

    status, paid, amount, payments = _booking(booking)
    assert status == Booking.Status.CONFIRMED and paid == amount == 10
    assert payments == [(Payment.Status.SUCCEEDED, "visa", "3184")]


@pytest.mark.django_db(transaction=True)
def test_a_refused_3d_secure_challenge_shows_the_error_and_leaves_the_booking_payable(
    card_mode,
    app_server,
    renter_booking,
    browser_page,
):
    booking, session = renter_booking
    page = browser_page
    _open(page, app_server.url, session, _checkout(booking))
    _type_card(page, "4000000000003220")
    page.locator("#pay").click()
    page.get_by_role("button", name="Fail authentication").click()

    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "failed authentication" in alert.inner_text()
    assert page.url.endswith(_checkout(booking))
    page.screenshot(path=str(ARTIFACTS / "card-3ds-refused.png"), full_page=True)

    status, paid, _, payments = _booking(booking)
    assert status == Booking.Status.PENDING_PAYMENT and paid == 0
    assert Payment.Status.SUCCEEDED not in [p[0] for p in payments]

    # and the same page takes another card at once
    _type_card(page, "4242424242424242")
    page.locator("#pay").click()
    page.wait_for_url("**/bookings/")
    status, paid, amount, payments = _booking(booking)
    assert status == Booking.Status.CONFIRMED and paid == amount
    assert [p[0] for p in payments].count(Payment.Status.SUCCEEDED) == 1


@pytest.mark.django_db(transaction=True)
def test_a_card_saved_on_the_cards_page_pays_the_next_checkout_without_typing_it(
    card_mode,
    app_server,
    renter_booking,
    browser_page,
):
    booking, session = renter_booking
    page = browser_page

    # saved through a SetupIntent (3-D Secure at setup, as European cards ask)
    _open(page, app_server.url, session, "/renter/cards/")
    assert page.locator("#no-cards").count() == 1
    _type_card(page, THREE_DS_CARD)
    page.locator("#pay").click()
    page.get_by_role("button", name="Complete authentication").click()
    page.wait_for_url("**/renter/cards/?setup_intent=*")
    assert "3184" in page.locator("#cards").inner_text()
    page.screenshot(path=str(ARTIFACTS / "card-saved.png"), full_page=True)

    # the checkout offers it, preselected: paying takes one click (the card was authenticated at setup,
    # but this one asks again at each payment, as localstripe's 3-D Secure cards do)
    page.goto(app_server.url + _checkout(booking))
    saved = page.locator("#saved-cards input[name=card]").first
    assert saved.is_checked() and "3184" in page.locator("#saved-cards").inner_text()
    assert page.locator("#card-element").is_hidden()
    page.locator("#pay").click()
    page.get_by_role("button", name="Complete authentication").click()
    page.wait_for_url("**/bookings/")

    status, paid, amount, payments = _booking(booking)
    assert status == Booking.Status.CONFIRMED and paid == amount
    assert payments == [(Payment.Status.SUCCEEDED, "visa", "3184")]


@pytest.fixture
def lender_session(catalogue):
    from tests.factories import make_lender

    lender = make_lender(email="card.lender@example.com")
    client = Client()
    client.force_login(lender)
    return lender, client.cookies["sessionid"].value


@pytest.mark.django_db(transaction=True)
def test_usdai_bought_by_card_on_the_wallet_page_is_recorded_once(card_mode, app_server, lender_session, browser_page):
    from financing.models import JournalEntry, UsdaiPurchase

    lender, session = lender_session
    page = browser_page
    _open(page, app_server.url, session, "/wallet/")
    page.fill("#id_buy-amount", "15.00")
    page.locator("#buy").click()
    page.wait_for_selector("#buy-card form[data-card-form]")
    _type_card(page, THREE_DS_CARD)
    page.locator("#buy-card #pay").click()
    page.get_by_role("button", name="Complete authentication").click()
    page.wait_for_selector(".messages")
    assert "Bought 15.00 USDai." in page.locator(".messages").inner_text()
    page.screenshot(path=str(ARTIFACTS / "card-usdai-bought.png"), full_page=True)

    def read():
        purchase = UsdaiPurchase.objects.get(user=lender)
        return purchase.status, JournalEntry.objects.filter(key=f"usdai:buy:{purchase.pk}").count()

    assert _db(read) == (UsdaiPurchase.Status.SUCCEEDED, 1)
