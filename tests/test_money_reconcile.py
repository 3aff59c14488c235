"""The money reconciler: bookings, refunds, the ledger and the gateway against each other.

Real PostgreSQL, the Stripe gateway over HTTP against localstripe
(``tests/localstripe_server.py``, whose PaymentIntent listing is patched to
Stripe's documented behaviour), the real booking, refund, USDai and ledger
services. Inconsistent states are made by direct ORM writes or by acting at
localstripe directly (a bug, a crash, someone in Stripe's dashboard); the
reconciler's collaborators are never mocked.
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import F
from django.urls import reverse
from django.utils import timezone
from django.utils.module_loading import import_string

from financing.models import MoneyAlert, MoneyReconciliation
from financing.services import money_reconcile as mr
from financing.services.ledger import Line, journal_post, system_account
from financing.services.money_reconcile import money_reconcile
from financing.services.revenue import ledger_pull
from financing.services.wallets import booking_pay_usdai, usdai_buy
from marketplace.models import Booking, Payment, Refund
from marketplace.services import bookings
from tests.factories import make_listing, next_hour

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

H = timedelta(hours=1)


@pytest.fixture(autouse=True)
def _needs_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL); CI runs it there")


def failing(report: MoneyReconciliation) -> list[str]:
    return [c["name"] for c in report.checks if not c["ok"]]


def check(report: MoneyReconciliation, name: str) -> dict:
    return next(c for c in report.checks if c["name"] == name)


def card_booking(renter, owner, *, hours_ahead: int = 2) -> Booking:
    """2 GPUs × 4 h × $3.25 = $26.00, paid by card through localstripe."""
    listing = make_listing(owner, price="3.25", gpu_count=2)
    start = next_hour(hours_ahead)
    booking = bookings.booking_create(renter=renter, listing=listing, gpu_count=2, start=start, end=start + 4 * H)
    return bookings.booking_pay(booking=booking, renter=renter, payment_method="pm_card_visa")


def use_one_hour(booking: Booking) -> None:
    bookings.booking_record_usage(
        booking=booking,
        key=f"{booking.pk}:0",
        interval_start=booking.start,
        interval_end=booking.start + H,
        gpu_seconds=7200,
    )


@pytest.fixture
def flow(stripe_mode, renter, owner):
    """A clean world: a card booking used 1 h of 4 and completed (a $19.50 partial refund sent
    through Stripe); $50.00 of USDai bought by card; a second booking paid with USDai, open."""
    done = card_booking(renter, owner)
    use_one_hour(done)
    done = bookings.booking_complete(booking=done, now=done.end)
    assert done.status == Booking.Status.COMPLETED and done.refunds.get().status == Refund.Status.SUCCEEDED
    purchase = usdai_buy(user=renter, amount=Decimal("50.00"), payment_method="pm_card_visa")
    assert purchase.status == "succeeded"
    listing = make_listing(owner, price="3.25", gpu_count=2)
    start = next_hour(3)
    second = bookings.booking_create(renter=renter, listing=listing, gpu_count=1, start=start, end=start + 4 * H)
    opened = booking_pay_usdai(booking=second, renter=renter)
    assert opened.status == Booking.Status.CONFIRMED and opened.amount_paid == Decimal("13.00")
    return {"completed": done, "open": opened, "purchase": purchase}


# --- A clean world ---------------------------------------------------------------------------


def test_a_full_clean_flow_reconciles_with_no_mismatch_before_and_after_the_ledger_pulls_it(flow):
    # given the ledger has not pulled anything yet (its rows are added back, exactly)
    before = money_reconcile()
    assert failing(before) == [] and before.mismatches == 0
    # when it has
    ledger_pull()
    report = money_reconcile()
    # then every check matches, with the sums it compared
    assert report.mismatches == 0 and failing(report) == []
    assert {c["name"] for c in report.checks} == {
        mr.BOOKINGS,
        mr.ESCROW,
        mr.REFUNDS_COUNTED,
        mr.REFUNDS_FAILED,
        mr.REFUNDS_STALE,
        mr.USDAI,
        mr.CHARGES,
        mr.PENDING,
        mr.PAYOUTS,
    }
    assert Decimal(check(report, mr.BOOKINGS)["expected"]) == Decimal("39.00")  # $26 by card + $13 in USDai
    assert check(report, mr.BOOKINGS)["expected"] == check(report, mr.BOOKINGS)["actual"] == "39.000000"
    assert Decimal(check(report, mr.ESCROW)["actual"]) == Decimal("13.00")  # the open USDai booking
    assert Decimal(check(report, mr.REFUNDS_COUNTED)["actual"]) == Decimal("19.50")
    assert Decimal(check(report, mr.CHARGES)["expected"]) == Decimal("76.00")  # the card booking + the purchase
    assert Decimal(check(report, mr.USDAI)["expected"]) == Decimal("63.00")  # $13 spent + $50 bought
    assert not MoneyAlert.objects.exists()


# --- Each check catches its mismatch ------------------------------------------------------


def test_a_refund_counted_without_a_refund_row_is_a_mismatch(flow):
    opened = flow["open"]
    # given a bug counted $5.00 as refunded on the open booking with no Refund row
    Booking.objects.filter(pk=opened.pk).update(amount_refunded=F("amount_refunded") + Decimal("5.00"))
    report = money_reconcile()
    counted = check(report, mr.REFUNDS_COUNTED)
    assert not counted["ok"]
    assert counted["details"] == [
        {
            "booking": str(opened.public_id),
            "id": opened.pk,
            "status": "confirmed",
            "counted": "5.000000",
            "refunds_sent": "0.000000",
            "refunds_in_flight": "0.000000",
        }
    ]
    # the $5 left the booking's escrow but not the money: captured ≠ accounted, and the ledger disagrees
    assert mr.BOOKINGS in failing(report) and mr.ESCROW in failing(report)
    assert check(report, mr.BOOKINGS)["details"][0]["captured"] == "13.000000"
    assert check(report, mr.BOOKINGS)["details"][0]["accounted"] == "8.000000"


def test_a_refund_stripe_refused_is_a_mismatch_and_its_money_is_left_on_a_closed_booking(
    stripe_mode, stripe_client, renter, owner
):
    booking = card_booking(renter, owner)
    use_one_hour(booking)
    # given someone refunded $19.50 of the $26.00 from Stripe's dashboard: our final refund is refused
    payment = booking.payments.get()
    stripe_client.v1.refunds.create(params={"payment_intent": payment.reference, "amount": 1950})
    done = bookings.booking_complete(booking=booking, now=booking.end)
    refund = done.refunds.get()
    assert refund.status == Refund.Status.FAILED
    report = money_reconcile()
    assert set(failing(report)) == {mr.REFUNDS_FAILED, mr.BOOKINGS, mr.ESCROW}
    failed = check(report, mr.REFUNDS_FAILED)
    assert failed["actual"] == "1" and failed["details"][0]["id"] == refund.pk
    assert failed["details"][0]["amount"] == "19.500000"
    row = check(report, mr.BOOKINGS)["details"][0]
    assert row["booking"] == str(done.public_id) and row["status"] == "completed"
    assert (row["captured"], row["accounted"], row["escrow_left_on_booking"]) == ("26.000000", "6.500000", "19.500000")


def test_a_refund_pending_longer_than_the_threshold_is_a_mismatch(stripe_mode, renter, owner):
    booking = card_booking(renter, owner)
    # given a cancellation whose refund row was written and never sent (the process stopped)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bookings, "refund_send", lambda *, refund, now=None: refund)
        cancelled = bookings.booking_cancel(booking=booking, renter=renter)
    refund = cancelled.refunds.get()
    assert refund.status == Refund.Status.PENDING
    # then within the threshold it is in flight and every check matches
    assert failing(money_reconcile()) == []
    # and past it, it is a mismatch
    later = timezone.now() + timedelta(minutes=settings.MONEY_RECONCILE_REFUND_PENDING_MINUTES + 1)
    report = money_reconcile(now=later)
    assert failing(report) == [mr.REFUNDS_STALE]
    assert check(report, mr.REFUNDS_STALE)["details"][0]["id"] == refund.pk


def test_a_captured_charge_no_booking_or_purchase_owns_is_a_mismatch(flow, stripe_client):
    # given a PaymentIntent captured at Stripe that no Payment or UsdaiPurchase records
    intent = stripe_client.v1.payment_intents.create(
        params={
            "amount": 1234,
            "currency": "usd",
            "payment_method_types": ["card"],
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    assert intent.status == "succeeded"
    report = money_reconcile()
    assert failing(report) == [mr.CHARGES]
    charges = check(report, mr.CHARGES)
    assert (Decimal(charges["expected"]), Decimal(charges["actual"])) == (Decimal("88.34"), Decimal("76.00"))
    assert charges["details"] == [
        {
            "gateway": "stripe",
            "charge": intent.id,
            "amount": "12.340000",
            "booking_id": "",
            "problem": "no booking or purchase owns it",
        }
    ]


def test_a_pending_payment_whose_intent_succeeded_is_a_mismatch_until_the_sweep_records_it(
    stripe_mode, stripe_gateway, renter, owner
):
    listing = make_listing(owner, price="3.25", gpu_count=2)
    start = next_hour(2)
    booking = bookings.booking_create(renter=renter, listing=listing, gpu_count=2, start=start, end=start + 4 * H)
    # given the process charged the card, recorded the reference, and stopped before recording the success
    payment = Payment.objects.create(
        booking=booking, gateway="stripe", idempotency_key=f"booking-{booking.public_id}-pay-1", amount=booking.amount
    )
    result = stripe_gateway.charge(
        booking_id=str(booking.public_id),
        amount=booking.amount,
        idempotency_key=payment.idempotency_key,
        payment_method="pm_card_visa",
    )
    Payment.objects.filter(pk=payment.pk).update(reference=result.reference)
    # then before the sweep's threshold it is not looked at, and the charge belongs to it
    assert failing(money_reconcile()) == []
    # and past it, it is a mismatch
    later = timezone.now() + timedelta(minutes=settings.PAYMENT_SWEEP_AFTER_MINUTES + 1)
    report = money_reconcile(now=later)
    assert failing(report) == [mr.PENDING]
    row = check(report, mr.PENDING)["details"][0]
    assert (row["payment"], row["gateway_status"], row["reference"]) == (payment.pk, "succeeded", result.reference)
    # the sweep records it; the reconciler then finds it clean
    assert bookings.payments_sweep(now=later)["succeeded"] == 1
    assert failing(money_reconcile(now=later)) == []


def test_escrow_in_the_ledger_that_no_open_booking_holds_is_a_mismatch(flow):
    ledger_pull()
    # given a bug posted $5.00 into renter escrow that belongs to no booking
    journal_post(
        key="bug:stray-escrow",
        description="stray",
        lines=[
            Line(system_account("gateway_clearing"), Decimal("5.00")),
            Line(system_account("renter_escrow"), Decimal("-5.00")),
        ],
    )
    report = money_reconcile()
    assert failing(report) == [mr.ESCROW]
    escrow = check(report, mr.ESCROW)
    assert (escrow["expected"], escrow["actual"]) == ("13.000000", "18.000000")
    assert escrow["details"][0]["difference"] == "5.000000"


def test_a_usdai_payment_the_ledger_does_not_match_is_a_mismatch(flow):
    opened = flow["open"]
    payment = opened.payments.get()
    # given a bug recorded the USDai payment as larger than the USDai the ledger took
    Payment.objects.filter(pk=payment.pk).update(amount=Decimal("14.00"))
    report = money_reconcile()
    assert mr.USDAI in failing(report)
    row = check(report, mr.USDAI)["details"][0]
    assert row["entry"] == f"usdai:spend:{payment.pk}" and row["payment_amount"] == "14.000000"


# --- Alerts --------------------------------------------------------------------------------


def test_a_failing_check_alerts_once_is_marked_clean_then_resolved_and_raises_anew(flow, operator, client_as):
    opened = flow["open"]
    Booking.objects.filter(pk=opened.pk).update(amount_refunded=Decimal("5.00"))
    # when two runs find it failing
    first = money_reconcile()
    second = money_reconcile()
    # then there is one open alert per failing check, raised by the first run, last seen by the second
    alerts = MoneyAlert.objects.filter(resolved_at__isnull=True)
    assert sorted(a.check_name for a in alerts) == sorted(failing(first)) == sorted(failing(second))
    counted = alerts.get(check_name=mr.REFUNDS_COUNTED)
    assert (counted.raised_by_id, counted.last_seen_id, counted.cleared_by_id) == (first.pk, second.pk, None)
    assert str(opened.public_id) in counted.message
    # when the state is repaired, the next run marks them clean and keeps them open (history)
    Booking.objects.filter(pk=opened.pk).update(amount_refunded=0)
    clean = money_reconcile()
    assert clean.mismatches == 0
    assert MoneyAlert.objects.filter(resolved_at__isnull=True).count() == alerts.count() == 3
    assert set(MoneyAlert.objects.values_list("cleared_by", flat=True)) == {clean.pk}
    page = client_as(operator).get(reverse("financing:operator_money"))
    assert page.content.decode().count("clean since the run of") == 3
    # when the operator resolves one, it stays as history and the next clean run raises nothing
    response = client_as(operator).post(reverse("financing:operator_money_alert_resolve", args=[counted.pk]))
    assert response.status_code == 302
    counted.refresh_from_db()
    assert counted.resolved_at is not None
    money_reconcile()
    assert MoneyAlert.objects.count() == 3
    # and if it fails again, it is a new alert
    Booking.objects.filter(pk=opened.pk).update(amount_refunded=Decimal("1.00"))
    again = money_reconcile()
    fresh = MoneyAlert.objects.get(check_name=mr.REFUNDS_COUNTED, resolved_at__isnull=True)
    assert fresh.pk != counted.pk and fresh.raised_by_id == again.pk
    # the other two, still open, failing again: not duplicated, no longer clean
    assert MoneyAlert.objects.filter(check_name=mr.BOOKINGS).count() == 1
    assert MoneyAlert.objects.get(check_name=mr.BOOKINGS).cleared_by_id is None


# --- The operator page ---------------------------------------------------------------------


def test_the_money_page_shows_the_mismatch_to_operators_and_refuses_everyone_else(
    flow, stripe_client, operator, renter, client_as
):
    intent = stripe_client.v1.payment_intents.create(
        params={
            "amount": 999,
            "currency": "usd",
            "payment_method_types": ["card"],
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    url = reverse("financing:operator_money")
    empty = client_as(operator).get(url)
    assert empty.status_code == 200 and "No money reconciliation has run yet." in empty.content.decode()
    # "run now"
    response = client_as(operator).post(reverse("financing:operator_money_run"))
    assert response.status_code == 302 and response["Location"] == url
    assert MoneyReconciliation.objects.count() == 1
    page = client_as(operator).get(url)
    html = page.content.decode()
    assert page.status_code == 200
    assert "1 check failed" in html and mr.CHARGES in html and intent.id in html
    assert "no booking or purchase owns it" in html
    assert html.count('action="/operator/money/alerts/') == 1  # one open alert, with its resolve button
    assert 'id="money-link"' in client_as(operator).get(reverse("financing:operator_chain")).content.decode()
    # everyone else
    assert client_as(renter).get(url).status_code == 403
    assert client_as(renter).post(reverse("financing:operator_money_run")).status_code == 403
    assert client_as(None).get(url).status_code == 302  # to log in
    assert MoneyReconciliation.objects.count() == 1
    # bad requests
    assert client_as(operator).get(reverse("financing:operator_money_run")).status_code == 405
    resolved = reverse("financing:operator_money_alert_resolve", args=[10**9])
    assert client_as(operator).post(resolved).status_code == 404


# --- The gateway listing, the schedule -----------------------------------------------------------


def test_stripe_lists_captured_charges_since_a_time_across_pages(stripe_mode, stripe_gateway, stripe_client):
    since = timezone.now() - timedelta(seconds=5)
    made = [
        stripe_gateway.charge(
            booking_id=f"b{i}", amount=Decimal(f"{i + 1}.00"), idempotency_key=f"k{i}", payment_method="pm_card_visa"
        )
        for i in range(3)
    ]
    # an intent not confirmed (nothing captured) is not listed
    stripe_gateway.charge(booking_id="b9", amount=Decimal("9.00"), idempotency_key="k9")
    charges = stripe_gateway.captured_charges(since=since, page_size=2)
    assert sorted(c.reference for c in charges) == sorted(r.reference for r in made)
    assert {c.booking_id: c.amount for c in charges} == {
        "b0": Decimal("1.00"),
        "b1": Decimal("2.00"),
        "b2": Decimal("3.00"),
    }
    assert stripe_gateway.captured_charges(since=timezone.now() + timedelta(minutes=1)) == []
    # localstripe, patched, lists newest first as Stripe does
    listed = stripe_client.v1.payment_intents.list(params={"limit": 10}).data
    assert [pi.created for pi in listed] == sorted((pi.created for pi in listed), reverse=True)


def test_the_hourly_task_runs_the_reconciler_with_the_offline_gateway(renter, owner):
    entry = next(e for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] == "financing.tasks.money_reconcile")
    assert entry["schedule"] == 3600.0
    listing = make_listing(owner, price="2.00", gpu_count=1)
    start = next_hour(2)
    booking = bookings.booking_create(renter=renter, listing=listing, gpu_count=1, start=start, end=start + 2 * H)
    bookings.booking_pay(booking=booking, renter=renter)
    # as run_scheduler runs it
    assert import_string(entry["task"]).run() == 0
    report = MoneyReconciliation.objects.get()
    assert Decimal(check(report, mr.CHARGES)["expected"]) == Decimal("4.00")
    # and a bug in the offline booking's totals is caught by it too
    Booking.objects.filter(pk=booking.pk).update(amount_paid=Decimal("3.00"))
    assert import_string(entry["task"]).run() > 0


# --- One snapshot ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_ledger_pulling_during_a_run_makes_no_difference_appear(catalogue):
    """The run reads one snapshot: the ledger journaling a payment between the run's reading
    of the escrow balance and of the rows not journaled yet is not seen half-way."""
    import threading

    from django.db import connections

    from tests.factories import make_owner, make_renter

    renter, owner = make_renter(), make_owner()
    listing = make_listing(owner, price="2.00", gpu_count=1)
    start = next_hour(2)
    booking = bookings.booking_create(renter=renter, listing=listing, gpu_count=1, start=start, end=start + 2 * H)
    bookings.booking_pay(booking=booking, renter=renter)
    pulled = []

    def pull_in_another_connection():
        try:
            pulled.append(ledger_pull()["payments"])
        finally:
            connections.close_all()

    def after_the_escrow_balance(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if not pulled and '"code" = %s' in sql and params and "renter_escrow" in params:
            worker = threading.Thread(target=pull_in_another_connection)
            worker.start()
            worker.join()
        return result

    with connection.execute_wrapper(after_the_escrow_balance):
        report = money_reconcile()
    assert pulled == [1]  # the payment was journaled mid-run, by another connection
    assert failing(report) == []
    assert check(report, mr.ESCROW)["details"][0]["not_yet_journaled_payments"] == "4.000000"
    assert failing(money_reconcile()) == []  # and the next run sees it journaled
    assert check(money_reconcile(), mr.ESCROW)["details"][0]["ledger_renter_escrow"] == "4.000000"
