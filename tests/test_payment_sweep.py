"""Booking payments left pending are read back from the gateway (issue 13, item 6).

A charge captured while the worker dies before recording it becomes a paid
booking without waiting for the webhook: ``payments_sweep`` reads the payment
back (``retrieve``) and records it on the webhook's own path, exactly once.
The Stripe gateway runs over HTTP against localstripe
(``tests/localstripe_server.py``); the crash is injected by making the step
after the charge raise once.
"""

import json
import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.urls import reverse
from django.utils import timezone

from financing.models import JournalEntry
from financing.services.revenue import ledger_pull
from marketplace.models import Booking, Payment
from marketplace.payments.base import PaymentDeclined
from marketplace.payments.stripe_gateway import sign_webhook_payload
from marketplace.services import bookings
from tests.factories import make_listing, next_hour

pytestmark = pytest.mark.django_db

LATER = timedelta(minutes=11)  # past PAYMENT_SWEEP_AFTER_MINUTES (10)


class Crash(Exception):
    """The worker dies here."""


@pytest.fixture
def booking(renter, owner):
    listing = make_listing(owner, price="3.25", gpu_count=2)
    start = next_hour(2)
    return bookings.booking_create(
        renter=renter, listing=listing, gpu_count=2, start=start, end=start + timedelta(hours=4)
    )


def _crash_once_after_the_charge(monkeypatch) -> None:
    """``booking_pay`` records the reference, then dies before recording the success."""
    original = bookings.payment_succeeded
    left = [1]

    def crashing(**kwargs):
        if left[0]:
            left[0] -= 1
            raise Crash("the worker died after the charge")
        return original(**kwargs)

    monkeypatch.setattr(bookings, "payment_succeeded", crashing)


def _pay_and_die(monkeypatch, booking, renter) -> Payment:
    _crash_once_after_the_charge(monkeypatch)
    with pytest.raises(Crash):
        bookings.booking_pay(booking=booking, renter=renter, payment_method="pm_card_visa")
    return booking.payments.get()


def _payment_entries(payment: Payment) -> int:
    return JournalEntry.objects.filter(payment=payment).count()


def _deliver_succeeded_webhook(client, stripe_client, stripe_mode, reference: str) -> int:
    events = stripe_client.v1.events.list().to_dict()["data"]
    (event,) = [
        e
        for e in events
        if e["type"] == "payment_intent.succeeded" and (e["data"]["object"] or {}).get("id") == reference
    ]
    payload = json.dumps(event).encode()
    return client.post(
        reverse("marketplace:stripe_webhook"),
        data=payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_webhook_payload(payload, stripe_mode.webhook_secret),
    ).status_code


def test_a_charge_captured_before_the_worker_died_is_completed_by_the_sweep_once(
    stripe_mode, stripe_client, monkeypatch, renter, booking, client
):
    # given a charge Stripe captured while the worker died before recording it
    payment = _pay_and_die(monkeypatch, booking, renter)
    assert payment.status == Payment.Status.PENDING and payment.reference.startswith("pi_")
    assert stripe_client.v1.payment_intents.retrieve(payment.reference).status == "succeeded"
    booking.refresh_from_db()
    assert booking.status == Booking.Status.PENDING_PAYMENT and booking.amount_paid == 0

    # when the sweep runs after the grace period
    done = bookings.payments_sweep(now=timezone.now() + LATER)

    # then the booking is paid and the ledger journals the payment once
    assert done == {"succeeded": 1, "failed": 0, "pending": 0}
    booking.refresh_from_db()
    payment.refresh_from_db()
    assert booking.status == Booking.Status.CONFIRMED and booking.amount_paid == booking.amount
    assert booking.expires_at is None and not booking.refunds.exists()
    assert payment.status == Payment.Status.SUCCEEDED
    ledger_pull()
    assert _payment_entries(payment) == 1

    # and the sweep again, then the late webhook, change nothing
    assert bookings.payments_sweep(now=timezone.now() + LATER) == {"succeeded": 0, "failed": 0, "pending": 0}
    assert _deliver_succeeded_webhook(client, stripe_client, stripe_mode, payment.reference) == 200
    ledger_pull()
    booking.refresh_from_db()
    assert booking.status == Booking.Status.CONFIRMED and booking.amount_paid == booking.amount
    assert not booking.refunds.exists()
    assert _payment_entries(payment) == 1
    assert JournalEntry.objects.filter(payment__isnull=False).count() == 1


def test_a_declined_payment_intent_marks_the_payment_failed(stripe_mode, stripe_gateway, renter, booking):
    # given a payment whose charge was declined while the worker lost the answer
    payment = Payment.objects.create(
        booking=booking, gateway="stripe", idempotency_key=f"booking-{booking.public_id}-pay-1", amount=booking.amount
    )
    with pytest.raises(PaymentDeclined) as declined:
        stripe_gateway.charge(
            booking_id=str(booking.public_id),
            amount=booking.amount,
            idempotency_key=payment.idempotency_key,
            payment_method="pm_card_chargeCustomerFail",
        )
    Payment.objects.filter(pk=payment.pk).update(reference=declined.value.reference)

    # when the sweep runs
    done = bookings.payments_sweep(now=timezone.now() + LATER)

    # then the payment is failed and the booking still waits to be paid
    assert done == {"succeeded": 0, "failed": 1, "pending": 0}
    payment.refresh_from_db()
    assert payment.status == Payment.Status.FAILED and payment.failure_message.startswith("Declined")
    booking.refresh_from_db()
    assert booking.status == Booking.Status.PENDING_PAYMENT and booking.amount_paid == 0


def test_a_canceled_payment_intent_marks_the_payment_failed(stripe_mode, stripe_gateway, stripe_client, booking):
    payment = Payment.objects.create(
        booking=booking, gateway="stripe", idempotency_key=f"booking-{booking.public_id}-pay-1", amount=booking.amount
    )
    result = stripe_gateway.charge(
        booking_id=str(booking.public_id), amount=booking.amount, idempotency_key=payment.idempotency_key
    )
    Payment.objects.filter(pk=payment.pk).update(reference=result.reference)
    stripe_client.v1.payment_intents.cancel(result.reference)

    assert bookings.payments_sweep(now=timezone.now() + LATER) == {"succeeded": 0, "failed": 1, "pending": 0}
    payment.refresh_from_db()
    assert payment.status == Payment.Status.FAILED and payment.failure_message == "The payment was canceled."


def test_a_payment_waiting_for_the_renter_is_left_alone(stripe_mode, stripe_gateway, renter, booking):
    # given a PaymentIntent Stripe.js has not confirmed yet
    payment = Payment.objects.create(
        booking=booking, gateway="stripe", idempotency_key=f"booking-{booking.public_id}-pay-1", amount=booking.amount
    )
    result = stripe_gateway.charge(
        booking_id=str(booking.public_id), amount=booking.amount, idempotency_key=payment.idempotency_key
    )
    assert result.status == "requires_payment_method"
    Payment.objects.filter(pk=payment.pk).update(reference=result.reference)

    assert bookings.payments_sweep(now=timezone.now() + LATER) == {"succeeded": 0, "failed": 0, "pending": 1}
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING
    booking.refresh_from_db()
    assert booking.status == Booking.Status.PENDING_PAYMENT and booking.amount_paid == 0


def test_a_fresh_pending_payment_is_left_alone(stripe_mode, monkeypatch, renter, booking):
    payment = _pay_and_die(monkeypatch, booking, renter)

    # younger than PAYMENT_SWEEP_AFTER_MINUTES: booking_pay may still be at it
    assert bookings.payments_sweep(now=timezone.now() + timedelta(minutes=9)) == {
        "succeeded": 0,
        "failed": 0,
        "pending": 0,
    }
    payment.refresh_from_db()
    booking.refresh_from_db()
    assert payment.status == Payment.Status.PENDING and booking.amount_paid == 0


def test_a_payment_older_than_the_maximum_age_is_no_longer_read_back(stripe_mode, monkeypatch, renter, booking):
    payment = _pay_and_die(monkeypatch, booking, renter)

    assert bookings.payments_sweep(now=timezone.now() + timedelta(hours=25)) == {
        "succeeded": 0,
        "failed": 0,
        "pending": 0,
    }
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING


def test_a_payment_without_a_reference_is_not_charged_again(stripe_mode, stripe_client, renter, booking, caplog):
    # given a payment reserved by booking_pay whose worker died before the gateway answered
    payment = Payment.objects.create(
        booking=booking, gateway="stripe", idempotency_key=f"booking-{booking.public_id}-pay-1", amount=booking.amount
    )

    done = bookings.payments_sweep(now=timezone.now() + LATER)

    assert done == {"succeeded": 0, "failed": 0, "pending": 1}
    assert list(stripe_client.v1.payment_intents.list().data) == []
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING
    assert "pending without a gateway reference" in caplog.text


def test_the_offline_gateway_payment_left_pending_is_completed(monkeypatch, renter, booking):
    _crash_once_after_the_charge(monkeypatch)
    with pytest.raises(Crash):
        bookings.booking_pay(booking=booking, renter=renter)
    payment = booking.payments.get()
    assert payment.gateway == "offline" and payment.reference.startswith("offpi_")

    assert bookings.payments_sweep(now=timezone.now() + LATER) == {"succeeded": 1, "failed": 0, "pending": 0}
    booking.refresh_from_db()
    assert booking.status == Booking.Status.CONFIRMED and booking.amount_paid == booking.amount
    ledger_pull()
    assert _payment_entries(payment) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_sweeps_record_a_captured_charge_once(catalogue, stripe_mode, monkeypatch, renter, booking):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL)")
    payment = _pay_and_die(monkeypatch, booking, renter)
    barrier = threading.Barrier(4)
    outcomes: list[object] = []

    def sweep() -> None:
        try:
            barrier.wait()
            outcomes.append(bookings.payments_sweep(now=timezone.now() + LATER))
        except Exception as exc:  # the outcome under test
            outcomes.append(exc)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=sweep) for _ in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()

    # every sweep sees it succeeded; it is recorded once
    assert outcomes == [{"succeeded": 1, "failed": 0, "pending": 0}] * 4
    booking.refresh_from_db()
    assert booking.status == Booking.Status.CONFIRMED and booking.amount_paid == booking.amount
    assert not booking.refunds.exists()
    ledger_pull()
    assert _payment_entries(payment) == 1
