"""Refunds: counted if and only if sent (crash windows, rejections, webhooks, sub-cent rests).

The invariant every test ends on, per booking, with the ledger as the judge:
paid = earned + refunds sent, refunds counted (``amount_refunded``) = refunds
pending or sent, and the booking's escrow in the ledger equals what the
booking says is left (0 once it is completed or cancelled).
"""

import json
import logging
from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.urls import reverse

from core import money
from financing.selectors.ledger import account_balance
from financing.services.revenue import ledger_pull
from marketplace.models import Booking, Payment, Refund, Settlement
from marketplace.payments.base import RefundResult
from marketplace.payments.offline import OfflineGateway
from marketplace.payments.stripe_gateway import sign_webhook_payload
from marketplace.services import bookings
from tests.factories import make_listing, next_hour

pytestmark = pytest.mark.django_db

H = timedelta(hours=1)


class Crash(Exception):
    """The process stops here."""


@contextmanager
def crash_on_insert(table: str):
    """The first INSERT into ``table`` raises before it reaches the database, once."""
    left = [1]

    def wrapper(execute, sql, params, many, context):
        if left[0] and sql.startswith(f'INSERT INTO "{table}"'):
            left[0] -= 1
            raise Crash(f"crash before {sql[:40]}")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield


def assert_refunds_counted_are_sent(booking: Booking, *, escrow: Decimal = Decimal(0)) -> None:
    booking.refresh_from_db()
    sent = money.sum_of(booking.refunds.filter(status=Refund.Status.SUCCEEDED))
    earned = money.sum_of(Settlement.objects.filter(booking=booking), "gross_amount")
    assert not booking.refunds.filter(status=Refund.Status.PENDING).exists()
    assert booking.amount_refunded == sent
    assert booking.amount_earned == earned
    assert booking.amount_paid == earned + sent + escrow
    assert booking.escrow == escrow
    ledger_pull()
    assert account_balance("renter_escrow") == -escrow  # a liability: credit balance


@pytest.fixture
def listing(owner):
    return make_listing(owner, price="2.49", gpu_count=4)


def paid_booking(renter, listing, *, n=2, hours=3) -> Booking:
    start = next_hour(2)
    booking = bookings.booking_create(renter=renter, listing=listing, gpu_count=n, start=start, end=start + hours * H)
    return bookings.booking_pay(booking=booking, renter=renter)


# --- Finding 2: counted and reserved in one transaction ------------------------------


def test_cancel_crashing_before_its_refund_row_counts_nothing_and_can_be_retried(renter, listing):
    # given a paid booking of $14.94
    booking = paid_booking(renter, listing)
    # when the cancellation crashes as it writes the refund
    with crash_on_insert(Refund._meta.db_table), pytest.raises(Crash):
        bookings.booking_cancel(booking=booking, renter=renter)
    # then nothing changed: the booking is live, nothing counted as refunded
    booking.refresh_from_db()
    assert booking.status == Booking.Status.CONFIRMED
    assert booking.amount_refunded == 0 and not booking.refunds.exists()
    # and the renter's retry cancels and refunds it in full
    cancelled = bookings.booking_cancel(booking=booking, renter=renter)
    assert cancelled.status == Booking.Status.CANCELLED and cancelled.amount_refunded == Decimal("14.94")
    bookings.refunds_retry()
    assert_refunds_counted_are_sent(booking)


def test_completion_crashing_before_its_refund_row_is_completed_by_the_next_tick(renter, listing):
    # given a paid booking with 1 h of 3 delivered on both GPUs
    booking = paid_booking(renter, listing)
    bookings.booking_record_usage(
        booking=booking, key="j:0", interval_start=booking.start, interval_end=booking.start + H, gpu_seconds=7200
    )
    # when its completion crashes as it writes the final refund
    with crash_on_insert(Refund._meta.db_table), pytest.raises(Crash):
        bookings.booking_complete(booking=booking, now=booking.end)
    booking.refresh_from_db()
    assert booking.status == Booking.Status.ACTIVE
    assert booking.amount_refunded == 0 and booking.amount_earned == Decimal("4.98")
    # then the next tick completes it, and the refund counted is the refund sent
    done = bookings.booking_complete(booking=booking, now=booking.end)
    assert done.status == Booking.Status.COMPLETED
    assert done.refunds.get().amount == Decimal("9.96")
    assert_refunds_counted_are_sent(booking)


def test_late_payment_crashing_before_its_refund_row_is_refunded_by_the_webhook_retry(renter, listing):
    # given a hold that expired before its payment arrived
    start = next_hour(2)
    booking = bookings.booking_create(renter=renter, listing=listing, gpu_count=2, start=start, end=start + 3 * H)
    payment = Payment.objects.create(
        booking=booking,
        gateway="offline",
        is_test=True,
        idempotency_key="k1",
        reference="offpi_late",
        amount=booking.amount,
    )
    bookings.bookings_tick(now=booking.expires_at + timedelta(seconds=1))
    # when the success is recorded and the process stops as it writes the refund
    with crash_on_insert(Refund._meta.db_table), pytest.raises(Crash):
        bookings.payment_succeeded(gateway="offline", reference=payment.reference, amount=payment.amount)
    # then the payment is not recorded either, so the webhook's retry handles it again
    booking.refresh_from_db()
    payment.refresh_from_db()
    assert payment.status == Payment.Status.PENDING and booking.amount_paid == 0
    bookings.payment_succeeded(gateway="offline", reference=payment.reference, amount=payment.amount)
    booking.refresh_from_db()
    assert booking.status == Booking.Status.EXPIRED
    assert booking.amount_paid == booking.amount_refunded == Decimal("14.94")
    assert booking.refunds.get().payment == payment
    assert_refunds_counted_are_sent(booking)


def test_a_crash_after_the_commit_leaves_a_pending_refund_the_retry_task_sends(renter, listing, monkeypatch):
    # given a paid booking, and a gateway call that never returns once (the process stops)
    booking = paid_booking(renter, listing)
    real = OfflineGateway.refund
    calls = []

    def refund_once_crashing(self, **kwargs):
        calls.append(kwargs["idempotency_key"])
        if len(calls) == 1:
            raise Crash("stopped while calling the gateway")
        return real(self, **kwargs)

    monkeypatch.setattr(OfflineGateway, "refund", refund_once_crashing)
    # when the cancellation crashes at the gateway call
    with pytest.raises(Crash):
        bookings.booking_cancel(booking=booking, renter=renter)
    booking.refresh_from_db()
    assert booking.status == Booking.Status.CANCELLED
    assert booking.refunds.get().status == Refund.Status.PENDING
    # then the retry task sends it, under the same idempotency key
    assert bookings.refunds_retry() == 1
    assert calls[0] == calls[1]
    assert_refunds_counted_are_sent(booking)


# --- Finding 3: a rejected refund is failed, not counted, alerted, retried -------------


def test_a_refund_the_gateway_reports_failed_is_uncounted_alerted_and_retried_with_backoff(
    renter, listing, monkeypatch, caplog
):
    # given a paid booking, and a gateway that answers the first refund "failed"
    booking = paid_booking(renter, listing)
    real = OfflineGateway.refund
    keys = []

    def refund_failing_once(self, **kwargs):
        keys.append(kwargs["idempotency_key"])
        if len(keys) == 1:
            return RefundResult(reference="offre_failed", status="failed", amount=kwargs["amount"])
        return real(self, **kwargs)

    monkeypatch.setattr(OfflineGateway, "refund", refund_failing_once)
    now = booking.start - H
    # when the renter cancels
    with caplog.at_level(logging.ERROR, logger="marketplace.services.bookings"):
        cancelled = bookings.booking_cancel(booking=booking, renter=renter, now=now)
    # then the refund is failed, not counted (the money is still in escrow), and an operator is alerted
    assert cancelled.status == Booking.Status.CANCELLED and cancelled.amount_refunded == 0
    refund = cancelled.refunds.get()
    assert refund.status == Refund.Status.FAILED and refund.reference == "offre_failed"
    assert refund.failure_message and refund.attempt == 1
    assert [r.levelname for r in caplog.records if "ALERT" in r.getMessage()] == ["ERROR"]
    assert_refunds_counted_are_sent(booking, escrow=Decimal("14.94"))
    # and it is retried only when due, as a new attempt with a new idempotency key
    assert refund.next_attempt_at is not None
    assert bookings.refunds_retry(now=refund.next_attempt_at - timedelta(seconds=1)) == 0
    assert len(keys) == 1
    assert bookings.refunds_retry(now=refund.next_attempt_at) == 1
    refund.refresh_from_db()
    assert refund.status == Refund.Status.SUCCEEDED and refund.attempt == 2 and refund.next_attempt_at is None
    assert len(keys) == 2 and keys[0] != keys[1]
    assert_refunds_counted_are_sent(booking)


@pytest.fixture
def stripe_booking(stripe_mode, renter, owner):
    listing = make_listing(owner, price="3.25", gpu_count=2)
    start = next_hour(2)
    booking = bookings.booking_create(renter=renter, listing=listing, gpu_count=2, start=start, end=start + 4 * H)
    return bookings.booking_pay(booking=booking, renter=renter, payment_method="pm_card_visa")


def test_a_refund_stripe_refuses_is_failed_for_good_and_alerted(stripe_booking, stripe_client, renter, caplog):
    # given a $26.00 Stripe payment already refunded in full from Stripe's dashboard
    payment = stripe_booking.payments.get()
    stripe_client.v1.refunds.create(params={"payment_intent": payment.reference})
    # when the renter cancels
    with caplog.at_level(logging.ERROR, logger="marketplace.services.bookings"):
        cancelled = bookings.booking_cancel(booking=stripe_booking, renter=renter)
    # then Stripe's refusal (not retryable) fails the refund for good and alerts an operator
    refund = cancelled.refunds.get()
    assert refund.status == Refund.Status.FAILED and refund.next_attempt_at is None
    assert "Stripe" in refund.failure_message
    assert any("ALERT" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
    # and nothing is counted as refunded that was not sent: the $26.00 is still in escrow
    assert cancelled.amount_refunded == 0
    assert_refunds_counted_are_sent(cancelled, escrow=Decimal("26.00"))
    assert bookings.refunds_retry() == 0


def _deliver_refund_event(client, secret: str, *, event_id: str, payment: Payment, refund_id: str, status: str, cents):
    payload = json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": "refund.updated",
            "created": 3,
            "data": {
                "object": {
                    "id": refund_id,
                    "object": "refund",
                    "payment_intent": payment.reference,
                    "amount": cents,
                    "status": status,
                    "metadata": {},
                }
            },
        }
    ).encode()
    response = client.post(
        reverse("marketplace:stripe_webhook"),
        data=payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=sign_webhook_payload(payload, secret),
    )
    assert response.status_code == 200


def test_a_refund_webhook_changes_only_the_refund_it_names(stripe_booking, stripe_mode, client):
    # given two refunds of one payment sent and pending at Stripe: A of $5.00 and B of $7.00
    payment = stripe_booking.payments.get()
    a, b = (
        Refund.objects.create(
            booking=stripe_booking,
            payment=payment,
            idempotency_key=f"manual-{name}",
            reference=f"re_{name}",
            amount=amount,
            reason=Refund.Reason.DOWNTIME,
        )
        for name, amount in (("A", Decimal("5.00")), ("B", Decimal("7.00")))
    )
    Booking.objects.filter(pk=stripe_booking.pk).update(amount_refunded=Decimal("12.00"))
    # when Stripe reports A succeeded
    secret = stripe_mode.webhook_secret
    _deliver_refund_event(
        client, secret, event_id="evt_a", payment=payment, refund_id="re_A", status="succeeded", cents=500
    )
    # then A succeeded and B is still pending
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.status, b.status) == (Refund.Status.SUCCEEDED, Refund.Status.PENDING)
    # when Stripe reports B failed
    _deliver_refund_event(
        client, secret, event_id="evt_b", payment=payment, refund_id="re_B", status="failed", cents=700
    )
    # then B failed (and is no longer counted), A is untouched
    a.refresh_from_db()
    b.refresh_from_db()
    assert (a.status, b.status) == (Refund.Status.SUCCEEDED, Refund.Status.FAILED)
    assert b.next_attempt_at is not None
    stripe_booking.refresh_from_db()
    assert stripe_booking.amount_refunded == Decimal("5.00")


# --- Finding 4: whole cents; the sub-cent rest is earned, the escrow empties ----------


def test_cancel_after_partial_use_leaves_no_sub_cent_in_escrow(renter, listing):
    # given 2 GPUs × 3 h at $2.49 = $14.94, paid; both GPUs fail 146 s in, with no replacement
    booking = paid_booking(renter, listing)
    failed_at = booking.start + timedelta(seconds=146)
    downtime = bookings.booking_interrupt(booking=booking, failed_at=failed_at, resumed_at=None, key="f1")
    assert downtime.amount == Decimal("14.73")  # 21,308 of 21,600 GPU-seconds, to the cent
    # and the 141 s delivered before are reported afterwards: 0.21 × 282 / 292 earned
    bookings.booking_record_usage(
        booking=booking,
        key="j:0",
        interval_start=booking.start,
        interval_end=booking.start + timedelta(seconds=141),
        gpu_seconds=282,
    )
    booking.refresh_from_db()
    assert booking.amount_earned == Decimal("0.202808") and booking.escrow == Decimal("0.007192")
    # when the renter cancels: two unused hours are worth more than the $0.007192 left
    cancelled = bookings.booking_cancel(booking=booking, renter=renter, now=failed_at)
    # then no refund under a cent is counted; the $0.007192 is the owner's, as a rounding adjustment
    assert cancelled.amount_refunded == Decimal("14.73") and cancelled.refunds.count() == 1
    rounding = Settlement.objects.get(booking=booking, rounding_adjustment__gt=0)
    assert rounding.gross_amount == rounding.rounding_adjustment == Decimal("0.007192")
    assert_refunds_counted_are_sent(cancelled)
