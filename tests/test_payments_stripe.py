"""Bookings paid through Stripe (localstripe over HTTP, the real SDK), and signed webhooks."""

import json
import random
from datetime import timedelta

import pytest
from django.urls import reverse

from marketplace.models import Booking, Payment, Refund, WebhookEvent
from marketplace.payments.stripe_gateway import sign_webhook_payload
from marketplace.services import bookings
from tests.factories import make_listing, next_hour

pytestmark = pytest.mark.django_db


@pytest.fixture
def booking(renter, owner):
    listing = make_listing(owner, price="3.25", gpu_count=2)
    start = next_hour(2)
    return bookings.booking_create(
        renter=renter, listing=listing, gpu_count=2, start=start, end=start + timedelta(hours=4)
    )


def test_card_payment_confirms_the_booking(stripe_mode, stripe_client, renter, booking):
    paid = bookings.booking_pay(booking=booking, renter=renter, payment_method="pm_card_visa")
    assert paid.status == Booking.Status.CONFIRMED and paid.amount_paid == paid.amount == booking.amount
    payment = paid.payments.get()
    assert payment.gateway == "stripe" and not payment.is_test and payment.reference.startswith("pi_")
    intent = stripe_client.v1.payment_intents.retrieve(payment.reference)
    assert intent.amount == 2600  # 2 GPUs × 4 h × $3.25, in cents
    assert intent.metadata["booking_id"] == str(booking.public_id)


def test_declined_card_leaves_the_booking_unpaid(stripe_mode, renter, booking):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as exc:
        bookings.booking_pay(booking=booking, renter=renter, payment_method="pm_card_chargeCustomerFail")
    assert "declined" in exc.value.message_dict["payment_method"][0]
    booking.refresh_from_db()
    assert booking.status == Booking.Status.PENDING_PAYMENT and booking.amount_paid == 0
    assert booking.payments.get().status == Payment.Status.FAILED
    # and another card can still pay, under a new idempotency key
    assert bookings.booking_pay(booking=booking, renter=renter, payment_method="pm_card_visa").status == "confirmed"
    assert booking.payments.count() == 2


def test_cancellation_refunds_through_stripe(stripe_mode, stripe_client, renter, booking):
    paid = bookings.booking_pay(booking=booking, renter=renter, payment_method="pm_card_visa")
    cancelled = bookings.booking_cancel(booking=paid, renter=renter)
    refund = cancelled.refunds.get()
    assert refund.status == Refund.Status.SUCCEEDED and refund.reference.startswith("re_")
    assert stripe_client.v1.refunds.retrieve(refund.reference).amount == 2600


def _deliver(client, payload: bytes, secret: str):
    return client.post(
        reverse("marketplace:stripe_webhook"),
        data=payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_webhook_payload(payload, secret),
    )


def _events_for(stripe_client, reference: str) -> list[dict]:
    events = stripe_client.v1.events.list().to_dict()["data"]
    return [e for e in events if (e["data"]["object"] or {}).get("id") == reference]


def test_webhooks_delivered_three_times_and_shuffled_take_effect_once(
    stripe_mode, stripe_gateway, stripe_client, renter, booking, client
):
    # given a charge that succeeded at Stripe while our process lost the answer
    payment = Payment.objects.create(
        booking=booking, gateway="stripe", idempotency_key=f"booking-{booking.public_id}-pay-1", amount=booking.amount
    )
    result = stripe_gateway.charge(
        booking_id=str(booking.public_id),
        amount=booking.amount,
        idempotency_key=payment.idempotency_key,
        payment_method="pm_card_visa",
    )
    succeeded = [e for e in _events_for(stripe_client, result.reference) if e["type"] == "payment_intent.succeeded"]
    assert len(succeeded) == 1
    # and a stale failure event for the same intent that arrives out of order
    failed = json.loads(json.dumps(succeeded[0]))
    failed.update(id="evt_stale_failure", type="payment_intent.payment_failed", created=succeeded[0]["created"] - 5)
    payloads = [json.dumps(e).encode() for e in (succeeded[0], failed)] * 3
    random.Random(7).shuffle(payloads)

    # when each is delivered three times, shuffled
    statuses = [_deliver(client, p, stripe_mode.webhook_secret).status_code for p in payloads]

    # then the booking is confirmed and paid exactly once
    assert statuses == [200] * 6
    booking.refresh_from_db()
    assert booking.status == Booking.Status.CONFIRMED and booking.amount_paid == booking.amount
    payment.refresh_from_db()
    assert payment.status == Payment.Status.SUCCEEDED and payment.reference == result.reference
    assert WebhookEvent.objects.count() == 2
    assert all(e.processed_at and e.attempts == 1 for e in WebhookEvent.objects.all())


def test_webhook_with_a_bad_signature_is_refused_and_nothing_is_processed(stripe_mode, booking, client):
    payload = json.dumps(
        {
            "id": "evt_forged",
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": 1,
            "data": {
                "object": {
                    "id": "pi_forged",
                    "object": "payment_intent",
                    "amount": 2600,
                    "metadata": {"booking_id": str(booking.public_id)},
                }
            },
        }
    ).encode()
    response = _deliver(client, payload, "whsec_not_the_endpoint_secret")
    assert response.status_code == 400
    unsigned = client.post(reverse("marketplace:stripe_webhook"), data=payload, content_type="application/json")
    assert unsigned.status_code == 400
    assert WebhookEvent.objects.count() == 0
    booking.refresh_from_db()
    assert booking.status == Booking.Status.PENDING_PAYMENT and booking.amount_paid == 0


def test_refund_webhook_confirms_a_pending_refund(stripe_mode, stripe_gateway, renter, booking, client):
    paid = bookings.booking_pay(booking=booking, renter=renter, payment_method="pm_card_visa")
    payment = paid.payments.get()
    refund = Refund.objects.create(
        booking=paid,
        payment=payment,
        idempotency_key="manual-1",
        reference="re_pending",
        amount=paid.amount,
        reason=Refund.Reason.DOWNTIME,
    )
    event = {
        "id": "evt_refund_1",
        "object": "event",
        "type": "charge.refunded",
        "created": 2,
        "data": {
            "object": {
                "id": "ch_1",
                "object": "charge",
                "payment_intent": payment.reference,
                "amount_refunded": 2600,
                "metadata": {},
            }
        },
    }
    for _ in range(3):
        assert _deliver(client, json.dumps(event).encode(), stripe_mode.webhook_secret).status_code == 200
    refund.refresh_from_db()
    assert refund.status == Refund.Status.SUCCEEDED
    assert WebhookEvent.objects.get().attempts == 1
