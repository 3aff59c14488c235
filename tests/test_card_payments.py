"""Cards as Stripe users expect (issue 14): Customers, PaymentIntents confirmed in the browser,
saved cards, receipts, invoices with tax lines, and USDai bought through the same webhook path.

Real parts: PostgreSQL, the Stripe gateway over HTTP against localstripe
(``tests/localstripe_server.py``). What Stripe.js does in the browser
(confirming a PaymentIntent with its client secret and a card) is done here by
the same request to localstripe (``POST /v1/payment_intents/{id}/confirm``);
the browser itself runs in ``tests/test_browser_cards.py``.
"""

import json
from decimal import Decimal

import pytest
import stripe
from django.core.exceptions import ValidationError
from django.db import connection
from django.urls import reverse

from accounts.models import RenterProfile
from accounts.services import renter_billing_update
from financing.models import ChainOp, JournalEntry, UsdaiPurchase
from financing.services import wallets
from marketplace.models import Booking, Payment, WebhookEvent
from marketplace.payments.stripe_gateway import sign_webhook_payload
from marketplace.selectors.bookings import booking_invoice
from marketplace.selectors.cards import saved_cards
from marketplace.services import bookings, cards
from marketplace.services.cards import renter_customer
from tests.concurrency import race
from tests.factories import make_lender, make_listing, make_renter, next_hour

pytestmark = pytest.mark.django_db

CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}


@pytest.fixture
def card_mode(stripe_mode, settings):
    settings.STRIPE_PUBLISHABLE_KEY = stripe_mode.publishable_key
    settings.STRIPE_JS_URL = stripe_mode.js_url
    return stripe_mode


@pytest.fixture
def booking(renter, owner):
    from datetime import timedelta

    listing = make_listing(owner, price="3.25", gpu_count=2)
    start = next_hour(2)
    return bookings.booking_create(
        renter=renter, listing=listing, gpu_count=2, start=start, end=start + timedelta(hours=4)
    )


def _confirm(stripe_client, reference: str, number: str = "4242424242424242"):
    """What Stripe.js's confirmCardPayment sends for a card typed into the Element."""
    return stripe_client.v1.payment_intents.confirm(
        reference, params={"payment_method_data": {"type": "card", "card": {**CARD, "number": number}}}
    )


def _deliver(client, event: dict, secret: str):
    payload = json.dumps(event).encode()
    return client.post(
        reverse("marketplace:stripe_webhook"),
        data=payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_webhook_payload(payload, secret),
    )


def _event(stripe_client, kind: str, reference: str) -> dict:
    events = stripe_client.v1.events.list(params={"limit": 100}).to_dict()["data"]
    (event,) = [e for e in events if e["type"] == kind and (e["data"]["object"] or {}).get("id") == reference]
    return event


# --- The Customer ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_racing_first_payments_make_one_customer(catalogue, card_mode, stripe_client):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL)")
    renter = make_renter()
    found: list[str] = []

    outcomes = race(4, lambda i: found.append(renter_customer(user=renter)))

    assert outcomes == ["ok"] * 4
    customers = stripe_client.v1.customers.list(params={"limit": 100}).data
    assert len(customers) == 1 and customers[0].email == renter.email
    assert set(found) == {customers[0].id}
    assert RenterProfile.objects.get(user=renter).stripe_customer_id == customers[0].id


def test_the_offline_gateway_makes_no_customer(renter):
    assert renter_customer(user=renter) == ""
    assert RenterProfile.objects.get(user=renter).stripe_customer_id == ""


# --- Paying a booking in the browser ------------------------------------------------------------


def test_checkout_creates_one_payment_intent_with_the_customer_and_the_receipt_email(
    card_mode, stripe_client, renter, booking
):
    first = bookings.booking_card_payment(booking=booking, renter=renter)
    again = bookings.booking_card_payment(booking=booking, renter=renter)  # the page reloaded

    assert first.status == "requires_payment_method" and first.client_secret.startswith(first.reference)
    assert (again.reference, again.client_secret) == (first.reference, first.client_secret)
    intent = stripe_client.v1.payment_intents.retrieve(first.reference)
    assert intent.amount == 2600 and intent.payment_method is None
    assert intent.receipt_email == renter.email
    assert intent.customer == RenterProfile.objects.get(user=renter).stripe_customer_id != ""
    assert intent.metadata["booking_id"] == str(booking.public_id)
    assert booking.payments.get().reference == first.reference
    booking.refresh_from_db()
    assert booking.status == Booking.Status.PENDING_PAYMENT and booking.amount_paid == 0


def test_the_return_page_and_the_webhook_record_the_payment_once_with_its_card(
    card_mode, stripe_client, renter, booking, client
):
    started = bookings.booking_card_payment(booking=booking, renter=renter)
    assert _confirm(stripe_client, started.reference).status == "succeeded"

    client.force_login(renter)
    back = client.get(
        reverse("marketplace:checkout_return", args=[booking.public_id]), {"payment_intent": started.reference}
    )
    assert back.status_code == 302 and back["Location"] == reverse("marketplace:my_bookings")
    event = _event(stripe_client, "payment_intent.succeeded", started.reference)
    assert _deliver(client, event, card_mode.webhook_secret).status_code == 200
    assert _deliver(client, event, card_mode.webhook_secret).status_code == 200  # replayed

    booking.refresh_from_db()
    assert booking.status == Booking.Status.CONFIRMED and booking.amount_paid == Decimal("26.00")
    payment = booking.payments.get()
    assert (payment.status, payment.card_brand, payment.card_last4) == (Payment.Status.SUCCEEDED, "visa", "4242")
    assert booking_invoice(booking).payment_method == "Visa •••• 4242"


def test_a_declined_card_records_nothing_and_the_booking_can_be_paid_again(
    card_mode, stripe_client, renter, booking, client
):
    started = bookings.booking_card_payment(booking=booking, renter=renter)
    with pytest.raises(stripe.CardError) as declined:
        _confirm(stripe_client, started.reference, number="4000000000000002")
    assert declined.value.user_message == "Your card was declined."

    # the browser shows the error; a reload of the checkout starts a new attempt
    client.force_login(renter)
    page = client.get(reverse("marketplace:checkout", args=[booking.public_id]))
    assert page.status_code == 200 and b"data-client-secret" in page.content
    booking.refresh_from_db()
    assert booking.status == Booking.Status.PENDING_PAYMENT and booking.amount_paid == 0
    first, second = booking.payments.order_by("pk")
    assert first.status == Payment.Status.FAILED and "declined" in first.failure_message
    assert second.status == Payment.Status.PENDING and second.reference not in ("", first.reference)

    # the webhook of the decline changes nothing more
    event = _event(stripe_client, "payment_intent.payment_failed", started.reference)
    assert _deliver(client, event, card_mode.webhook_secret).status_code == 200
    assert _confirm(stripe_client, second.reference).status == "succeeded"
    assert bookings.booking_pay_return(booking=booking, renter=renter, reference=second.reference).status == (
        Booking.Status.CONFIRMED
    )
    assert booking.payments.filter(status=Payment.Status.SUCCEEDED).count() == 1


def test_a_return_for_a_declined_payment_is_a_clear_error(card_mode, stripe_client, renter, booking):
    started = bookings.booking_card_payment(booking=booking, renter=renter)
    with pytest.raises(stripe.CardError):
        _confirm(stripe_client, started.reference, number="4000000000000002")
    with pytest.raises(ValidationError) as refused:
        bookings.booking_pay_return(booking=booking, renter=renter, reference=started.reference)
    assert "declined" in refused.value.message_dict["payment_method"][0]
    with pytest.raises(ValidationError):
        bookings.booking_pay_return(booking=booking, renter=renter, reference="pi_not_this_booking")
    booking.refresh_from_db()
    assert booking.amount_paid == 0 and booking.payments.get().status == Payment.Status.FAILED


def test_the_checkout_page_shows_a_clear_message_when_the_gateway_is_down(card_mode, settings, renter, booking, client):
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # nothing listens there
    settings.STRIPE_TIMEOUT_SECONDS = 1
    client.force_login(renter)
    page = client.get(reverse("marketplace:checkout", args=[booking.public_id]))
    assert page.status_code == 200
    assert "The payment service did not answer; try again." in page.content.decode()
    assert b"data-client-secret" not in page.content
    booking.refresh_from_db()
    assert booking.status == Booking.Status.PENDING_PAYMENT and booking.amount_paid == 0
    assert not booking.payments.filter(status=Payment.Status.SUCCEEDED).exists()


def test_the_checkout_page_hands_stripe_js_its_keys_and_allows_only_its_origin(card_mode, renter, booking, client):
    client.force_login(renter)
    page = client.get(reverse("marketplace:checkout", args=[booking.public_id]))
    html = page.content.decode()
    assert f'data-publishable-key="{card_mode.publishable_key}"' in html
    assert f'<script src="{card_mode.js_url}"></script>' in html and "<script>" not in html
    policy = {p.split()[0]: p.split()[1:] for p in (x.strip() for x in page["Content-Security-Policy"].split(";")) if p}
    assert policy["script-src"] == ["'self'", card_mode.url]
    assert policy["connect-src"] == ["'self'", card_mode.url]
    assert policy["frame-src"] == [card_mode.url]
    # and a page without a card keeps the strict policy
    strict = client.get(reverse("marketplace:my_bookings"))["Content-Security-Policy"]
    assert card_mode.url not in strict


def test_the_api_pay_returns_the_client_secret_for_stripe_js(card_mode, stripe_client, renter, booking, api_as):
    url = reverse("api:booking-pay", args=[booking.public_id])
    answer = api_as(renter).post(url, {}, format="json", HTTP_IDEMPOTENCY_KEY="pay-card-1")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["status"] == "pending_payment" and body["payment"]["status"] == "requires_payment_method"
    intent = stripe_client.v1.payment_intents.retrieve(body["payment"]["reference"])
    assert body["payment"]["client_secret"] == intent.client_secret


# --- Saved cards -------------------------------------------------------------------------------


def test_a_card_saved_by_a_setup_intent_is_listed_offered_and_can_be_removed(card_mode, stripe_client, renter):
    setup = cards.card_setup_start(user=renter)
    stripe_client.v1.setup_intents.confirm(
        setup.reference, params={"payment_method_data": {"type": "card", "card": CARD}}
    )

    (card,) = saved_cards(user=renter)
    assert (card.brand, card.last4, card.exp_month, card.exp_year) == ("visa", "4242", 12, 2034)
    assert card.label == "Visa •••• 4242"

    # someone else cannot remove it
    other = make_renter()
    with pytest.raises(ValidationError):
        cards.card_remove(user=other, reference=card.reference)
    renter_customer(user=other)
    with pytest.raises(ValidationError) as refused:
        cards.card_remove(user=other, reference=card.reference)
    assert refused.value.message_dict["card"] == ["This card is not one of your saved cards."]
    assert len(saved_cards(user=renter)) == 1

    cards.card_remove(user=renter, reference=card.reference)
    assert saved_cards(user=renter) == []


def test_the_cards_page_in_the_demo_says_no_card_is_saved(renter, client):
    client.force_login(renter)
    page = client.get(reverse("marketplace:cards"))
    assert page.status_code == 200 and b'id="test-payment"' in page.content and b"data-card-form" not in page.content


# --- Invoices ----------------------------------------------------------------------------------


def _paid(renter, booking, stripe_client):
    started = bookings.booking_card_payment(booking=booking, renter=renter)
    _confirm(stripe_client, started.reference)
    return bookings.booking_pay_return(booking=booking, renter=renter, reference=started.reference)


@pytest.mark.parametrize(
    ("country", "vat_id", "rate", "taxable", "tax", "rule"),
    [
        ("DE", "DE136695976", "0", "26.00", "0.00", "Reverse charge"),
        ("IE", "", "23", "21.14", "4.86", "VAT 23 % (IE), included"),
        ("FR", "", "20", "21.67", "4.33", "VAT 20 % (FR), included"),
        ("US", "12-3456789", "0", "26.00", "0.00", "Outside the scope of EU VAT"),
    ],
)
def test_the_invoice_names_seller_buyer_payment_method_and_tax_lines_that_sum_exactly(
    card_mode, stripe_client, renter, booking, client, settings, country, vat_id, rate, taxable, tax, rule
):
    renter_billing_update(
        user=renter, billing_name="Acme GmbH", billing_address="Hauptstr. 1\n10115 Berlin", billing_country=country,
        vat_id=vat_id,
    )  # fmt: skip
    paid = _paid(renter, booking, stripe_client)

    invoice = booking_invoice(paid)
    assert invoice.seller.name == settings.INVOICE_SELLER_NAME and invoice.seller.vat_id == "IE1234567T"
    assert (invoice.buyer.name, invoice.buyer.country, invoice.buyer.vat_id) == ("Acme GmbH", country, vat_id)
    assert invoice.payment_method == "Visa •••• 4242"
    (line,) = invoice.tax_lines
    assert line.description.startswith(rule)
    assert (line.rate, line.taxable, line.tax) == (Decimal(rate), Decimal(taxable), Decimal(tax))
    assert line.taxable + line.tax == invoice.net == paid.amount_paid == Decimal("26.00")
    assert sum(item.amount for item in invoice.lines) == invoice.paid

    client.force_login(renter)
    html = client.get(reverse("marketplace:invoice", args=[booking.public_id])).content.decode()
    for text in (settings.INVOICE_SELLER_NAME, "Acme GmbH", "Hauptstr. 1", "Visa •••• 4242", taxable, tax):
        assert text in html
    if vat_id:
        assert f"VAT {vat_id}" in html


def test_the_invoice_of_a_refunded_booking_taxes_the_net_charge(card_mode, stripe_client, renter, booking):
    renter_billing_update(user=renter, billing_name="Jo", billing_address="1 Main St", billing_country="IE")
    paid = _paid(renter, booking, stripe_client)
    cancelled = bookings.booking_cancel(booking=paid, renter=renter)
    invoice = booking_invoice(cancelled)
    (line,) = invoice.tax_lines
    assert line.taxable + line.tax == invoice.net == cancelled.amount_paid - cancelled.amount_refunded


@pytest.mark.parametrize(
    ("country", "vat_id", "error"),
    [
        ("DE", "DE123", "not a valid EU VAT id"),
        ("FR", "DE136695976", "not from FR"),
    ],
)
def test_the_billing_form_refuses_a_bad_vat_id(renter, client, country, vat_id, error):
    client.force_login(renter)
    answer = client.post(
        reverse("accounts:billing"),
        {"billing_name": "Acme", "billing_address": "Street 1", "billing_country": country, "vat_id": vat_id},
    )
    assert answer.status_code == 400 and error in answer.content.decode()
    assert RenterProfile.objects.get(user=renter).vat_id == ""


def test_the_billing_form_stores_a_vat_id_compact(renter, client):
    client.force_login(renter)
    answer = client.post(
        reverse("accounts:billing"),
        {"billing_name": "Acme", "billing_address": "Street 1", "billing_country": "DE", "vat_id": "DE 136 695 976"},
    )
    assert answer.status_code == 302
    assert RenterProfile.objects.get(user=renter).vat_id == "DE136695976"


# --- USDai bought by card: the same PaymentIntent + webhook path --------------------------------


def _buy_entries(purchase) -> int:
    return JournalEntry.objects.filter(key=f"usdai:buy:{purchase.pk}").count()


def _mints(purchase) -> int:
    return ChainOp.objects.filter(key=f"usdai:mint:{purchase.pk}").count()


def test_a_card_purchase_is_recorded_once_by_the_webhook_the_return_page_and_the_sweep(
    card_mode, stripe_client, client
):
    from datetime import timedelta

    from django.utils import timezone

    lender = make_lender()
    purchase = wallets.usdai_buy_start(user=lender, amount=Decimal("40.00"))
    assert purchase.status == UsdaiPurchase.Status.PENDING and purchase.reference.startswith("pi_")
    intent = stripe_client.v1.payment_intents.retrieve(purchase.reference)
    assert intent.metadata["usdai_purchase"] == str(purchase.pk) and intent.receipt_email == lender.email
    card = wallets.usdai_purchase_card(user=lender, purchase_id=purchase.pk)
    assert card.client_secret == intent.client_secret
    _confirm(stripe_client, purchase.reference)

    # the webhook first, twice; then the return page; then a sweep: one purchase
    event = _event(stripe_client, "payment_intent.succeeded", purchase.reference)
    assert _deliver(client, event, card_mode.webhook_secret).status_code == 200
    assert _deliver(client, event, card_mode.webhook_secret).status_code == 200
    assert wallets.usdai_purchase_return(user=lender, purchase_id=purchase.pk).status == "succeeded"
    wallets.usdai_purchases_sweep(older_than=timedelta(0), now=timezone.now() + timedelta(minutes=1))

    purchase.refresh_from_db()
    assert purchase.status == UsdaiPurchase.Status.SUCCEEDED and purchase.reference == intent.id
    assert (_buy_entries(purchase), _mints(purchase)) == (1, 1)
    assert WebhookEvent.objects.get(event_id=event["id"]).processed_at is not None


def test_a_card_purchase_the_return_page_records_before_the_webhook_is_recorded_once(card_mode, stripe_client, client):
    lender = make_lender()
    purchase = wallets.usdai_buy_start(user=lender, amount=Decimal("25.00"))
    _confirm(stripe_client, purchase.reference)

    client.force_login(lender)
    back = client.get(reverse("financing:wallet"), {"purchase": purchase.pk, "payment_intent": purchase.reference})
    assert back.status_code == 302
    event = _event(stripe_client, "payment_intent.succeeded", purchase.reference)
    assert _deliver(client, event, card_mode.webhook_secret).status_code == 200

    purchase.refresh_from_db()
    assert purchase.status == UsdaiPurchase.Status.SUCCEEDED
    assert (_buy_entries(purchase), _mints(purchase)) == (1, 1)


def test_a_purchase_waiting_for_the_browser_is_left_pending_by_the_sweep(card_mode, stripe_client):
    from datetime import timedelta

    from django.utils import timezone

    lender = make_lender()
    purchase = wallets.usdai_buy_start(user=lender, amount=Decimal("25.00"))
    done = wallets.usdai_purchases_sweep(older_than=timedelta(0), now=timezone.now() + timedelta(minutes=10))
    assert done["pending"] == 1
    purchase.refresh_from_db()
    assert purchase.status == UsdaiPurchase.Status.PENDING and _buy_entries(purchase) == 0


def test_a_declined_then_paid_card_purchase_fails_then_completes_once(card_mode, stripe_client, client):
    lender = make_lender()
    purchase = wallets.usdai_buy_start(user=lender, amount=Decimal("30.00"))
    with pytest.raises(stripe.CardError):
        _confirm(stripe_client, purchase.reference, number="4000000000000002")
    failed = _event(stripe_client, "payment_intent.payment_failed", purchase.reference)
    assert _deliver(client, failed, card_mode.webhook_secret).status_code == 200
    purchase.refresh_from_db()
    assert purchase.status == UsdaiPurchase.Status.FAILED and _buy_entries(purchase) == 0

    # the same PaymentIntent paid with another card: captured, so it is the purchase
    _confirm(stripe_client, purchase.reference)
    paid = _event(stripe_client, "payment_intent.succeeded", purchase.reference)
    assert _deliver(client, paid, card_mode.webhook_secret).status_code == 200
    assert _deliver(client, paid, card_mode.webhook_secret).status_code == 200
    purchase.refresh_from_db()
    assert purchase.status == UsdaiPurchase.Status.SUCCEEDED
    assert (_buy_entries(purchase), _mints(purchase)) == (1, 1)


def test_a_webhook_for_an_unknown_purchase_is_harmless(card_mode, stripe_gateway, stripe_client, client):
    result = stripe_gateway.charge(
        booking_id="",
        amount=Decimal("12.00"),
        idempotency_key="no-such-purchase",
        payment_method="pm_card_visa",
        metadata={"usdai_purchase": "999999"},
    )
    event = _event(stripe_client, "payment_intent.succeeded", result.reference)
    before = (UsdaiPurchase.objects.count(), JournalEntry.objects.count(), ChainOp.objects.count())

    assert _deliver(client, event, card_mode.webhook_secret).status_code == 200

    assert (UsdaiPurchase.objects.count(), JournalEntry.objects.count(), ChainOp.objects.count()) == before
    assert WebhookEvent.objects.get(event_id=event["id"]).processed_at is not None


def test_the_wallet_page_takes_the_card_in_the_browser(card_mode, stripe_client, client):
    lender = make_lender()
    client.force_login(lender)
    answer = client.post(reverse("financing:wallet"), {"action": "buy", "buy-amount": "20.00"})
    assert answer.status_code == 302 and "?purchase=" in answer["Location"]
    purchase = UsdaiPurchase.objects.get(user=lender)
    page = client.get(answer["Location"])
    html = page.content.decode()
    assert page.status_code == 200 and 'data-mode="purchase"' in html
    intent = stripe_client.v1.payment_intents.retrieve(purchase.reference)
    assert f'data-client-secret="{intent.client_secret}"' in html
    assert card_mode.url in page["Content-Security-Policy"]


def test_a_crash_after_the_payment_intent_is_created_is_recovered_and_the_purchase_recorded_once(
    card_mode, stripe_client, client, monkeypatch
):
    from datetime import timedelta

    from django.utils import timezone

    # given a worker that dies after localstripe created the PaymentIntent, before its id is stored
    lender = make_lender()
    charge = wallets._purchase_charge

    def charge_then_die(*args, **kwargs):
        charge(*args, **kwargs)
        raise RuntimeError("worker killed after the charge")

    monkeypatch.setattr(wallets, "_purchase_charge", charge_then_die)
    with pytest.raises(RuntimeError):
        wallets.usdai_buy_start(user=lender, amount=Decimal("35.00"))
    monkeypatch.setattr(wallets, "_purchase_charge", charge)
    purchase = UsdaiPurchase.objects.get(user=lender)
    assert purchase.status == UsdaiPurchase.Status.PENDING and purchase.reference == ""

    # the sweep presents the same request again: the same PaymentIntent, kept for the wallet page
    later = timezone.now() + timedelta(minutes=10)
    assert wallets.usdai_purchases_sweep(older_than=timedelta(0), now=later)["pending"] == 1
    purchase.refresh_from_db()
    (intent,) = stripe_client.v1.payment_intents.list(params={"limit": 10}).data
    assert purchase.reference == intent.id and purchase.status == UsdaiPurchase.Status.PENDING

    # the buyer pays it; webhook and sweep both see the success: one purchase
    _confirm(stripe_client, intent.id)
    event = _event(stripe_client, "payment_intent.succeeded", intent.id)
    assert _deliver(client, event, card_mode.webhook_secret).status_code == 200
    wallets.usdai_purchases_sweep(older_than=timedelta(0), now=later)
    purchase.refresh_from_db()
    assert purchase.status == UsdaiPurchase.Status.SUCCEEDED
    assert (_buy_entries(purchase), _mints(purchase)) == (1, 1)


@pytest.mark.django_db(transaction=True)
def test_the_webhook_and_the_return_page_racing_record_the_purchase_once(catalogue, card_mode, stripe_client):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL)")
    from django.test import Client

    lender = make_lender()
    purchase = wallets.usdai_buy_start(user=lender, amount=Decimal("45.00"))
    _confirm(stripe_client, purchase.reference)
    event = _event(stripe_client, "payment_intent.succeeded", purchase.reference)

    def attempt(i: int) -> None:
        if i % 2:
            assert _deliver(Client(), event, card_mode.webhook_secret).status_code == 200
        else:
            wallets.usdai_purchase_return(user=lender, purchase_id=purchase.pk)

    assert race(4, attempt) == ["ok"] * 4
    purchase.refresh_from_db()
    assert purchase.status == UsdaiPurchase.Status.SUCCEEDED
    assert (_buy_entries(purchase), _mints(purchase)) == (1, 1)


def test_the_cards_page_removes_a_saved_card(card_mode, stripe_client, renter, client):
    setup = cards.card_setup_start(user=renter)
    stripe_client.v1.setup_intents.confirm(
        setup.reference, params={"payment_method_data": {"type": "card", "card": CARD}}
    )
    (card,) = saved_cards(user=renter)
    client.force_login(renter)
    page = client.get(reverse("marketplace:cards"))
    assert page.status_code == 200 and "Visa •••• 4242" in page.content.decode()
    assert b'data-mode="setup"' in page.content

    assert client.post(reverse("marketplace:cards"), {"card": "pm_someone_elses"}).status_code == 400
    assert len(saved_cards(user=renter)) == 1
    assert client.post(reverse("marketplace:cards"), {"card": card.reference}).status_code == 302
    assert saved_cards(user=renter) == []


def test_the_api_buys_usdai_by_card_through_stripe_js_and_the_webhook(card_mode, stripe_client, client, api_as):
    lender = make_lender()
    api = api_as(lender)

    # when a client asks to buy without a payment method, with a card gateway
    answer = api.post(reverse("api:wallet-usdai"), {"amount": "30.00"}, format="json", HTTP_IDEMPOTENCY_KEY="buy-1")

    # then the purchase waits for the browser, with the PaymentIntent's client secret; nothing is credited
    assert answer.status_code == 201, answer.content
    body = answer.json()
    purchase = UsdaiPurchase.objects.get(pk=body["id"])
    intent = stripe_client.v1.payment_intents.retrieve(purchase.reference)
    assert body["status"] == "pending" and body["client_secret"] == intent.client_secret
    assert (_buy_entries(purchase), _mints(purchase)) == (0, 0)
    replay = api.post(reverse("api:wallet-usdai"), {"amount": "30.00"}, format="json", HTTP_IDEMPOTENCY_KEY="buy-1")
    assert replay.json()["id"] == purchase.pk and UsdaiPurchase.objects.count() == 1

    # when Stripe.js confirms it and the webhook arrives
    _confirm(stripe_client, purchase.reference)
    event = _event(stripe_client, "payment_intent.succeeded", purchase.reference)
    assert _deliver(client, event, card_mode.webhook_secret).status_code == 200

    # then reading it back says succeeded, with no secret any more, credited once
    read = api.get(reverse("api:wallet-usdai-purchase", args=[purchase.pk])).json()
    assert (read["status"], read["client_secret"]) == ("succeeded", "")
    assert (_buy_entries(purchase), _mints(purchase)) == (1, 1)
    # and another user cannot read it
    assert api_as(make_lender()).get(reverse("api:wallet-usdai-purchase", args=[purchase.pk])).status_code == 404
