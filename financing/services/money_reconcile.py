"""Reconciliation of money: bookings, refunds, the ledger and the payment gateway
(hourly, and on the operator's money page).

Checks, each exact to the micro-dollar (Decimal, never float):

1. per booking, what was captured (its succeeded payments) = what it earned
   (its settlements' gross, the sub-cent remainder included) + the refunds the
   gateway confirmed + the refunds still in flight (pending rows) + what is
   still in escrow for it (``Booking.escrow``; 0 once it is closed);
2. the ledger's ``renter_escrow`` balance, with the rows the ledger has not
   pulled yet added back (``ledger_pull`` runs every minute), = the open
   bookings' escrow + the refunds in flight (the ledger releases a refund
   when the gateway confirms it);
3. per booking, the refunds counted (``amount_refunded``) = refunds sent +
   refunds in flight; no refund is failed; none is pending longer than
   ``MONEY_RECONCILE_REFUND_PENDING_MINUTES``;
4. USDai in the ledger: every ``usdai:spend`` entry is a succeeded USDai
   payment of a booking, of the same amount, and the other way round; every
   ``usdai:buy`` entry is a succeeded ``UsdaiPurchase``, and the other way round;
5. every charge the card gateways captured over the last
   ``MONEY_RECONCILE_CHARGES_HOURS`` (``captured_charges``) belongs to a
   booking's ``Payment`` or a ``UsdaiPurchase`` with the same amount, and each
   succeeded card payment of that window is captured at its gateway;
6. a booking payment still pending past the sweep's threshold
   (``PAYMENT_SWEEP_AFTER_MINUTES``) whose gateway status is final
   (succeeded, canceled, declined) is a mismatch: ``payments_sweep`` fixes
   it, this reports it.
7. owner payouts: every paid payout is one ``payout:<id>`` ledger entry of its
   amount and its rail's row (the outbox mint ``payout:<id>:mint`` of as many wei,
   or a line in a SEPA file, in its XML once built), and the other way round (no
   entry, mint or line without its paid payout; none for a withheld, failed or
   carried one); no payout mint failed on chain; ``payouts_in_transit`` holds the
   lines of files not marked sent.

Checks 1-4 and 7 read one snapshot of the database (REPEATABLE READ on PostgreSQL),
so a booking or the ledger moving during the run cannot make a difference
appear. Checks 5 and 6 call the gateway outside any transaction and read the
database after the gateway answered: a payment or purchase row is written
before its charge is made, so a charge listed is never newer than its row.

Every failing check alerts (``MoneyAlert``): one open alert per check, kept
(its latest run updated) while later runs still find it failing, marked clean
by the first run that finds it clean, resolved by an operator only.
"""

import logging
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connection, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from core import money
from core.api import digits
from financing.chain.client import usd_to_wei
from financing.models import ChainOp, JournalEntry, MoneyAlert, MoneyReconciliation, Payout, Posting, UsdaiPurchase
from marketplace.models import Booking, Payment, Refund, Settlement
from marketplace.payments import get_gateway
from marketplace.payments.base import GatewayError, PaymentDeclined

logger = logging.getLogger(__name__)

BOOKINGS = "Bookings: captured = earned + refunds sent + refunds in flight + escrow"
ESCROW = "Ledger escrow = open bookings' escrow + refunds in flight"
REFUNDS_COUNTED = "Refunds counted = refunds sent + refunds in flight"
REFUNDS_FAILED = "No failed refunds"
REFUNDS_STALE = "No refund pending too long"
USDAI = "USDai in the ledger = USDai booking payments and purchases"
CHARGES = "Captured charges belong to a booking or a purchase"
PENDING = "Pending payments are still pending at the gateway"
PAYOUTS = "Payouts = ledger entries = outbox mints and SEPA lines"

MAX_DETAILS = 50  # rows of details kept per check (the count is always whole)
PENDING_BATCH = 200  # pending payments read back per run
_FINAL = ("succeeded", "canceled")
_OWNED = (Payment.Status.SUCCEEDED, Payment.Status.PENDING)  # == UsdaiPurchase's


def _zero() -> Decimal:
    return money.usd(0)


def _sums(queryset, field: str = "amount", key: str = "booking_id") -> dict[int, Decimal]:
    rows = queryset.order_by().values(key).annotate(total=Sum(field)).values_list(key, "total")
    return {k: money.usd(total) for k, total in rows}


def _check(name: str, expected, actual, ok: bool, details: list[dict] | None = None, **extra) -> dict:
    details = details or []
    return {
        "name": name,
        "expected": str(expected),
        "actual": str(actual),
        "ok": ok,
        "details": details[:MAX_DETAILS],
        "details_total": len(details),
        **extra,
    }


@contextmanager
def _snapshot():
    """One consistent, read-only view of the database for the checks that compare tables."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


# --- 1-3: bookings, refunds and the ledger's escrow -----------------------------------


def _booking_checks(now: datetime) -> list[dict]:
    paid = _sums(Payment.objects.filter(status=Payment.Status.SUCCEEDED))
    earned = _sums(Settlement.objects.all(), "gross_amount")
    sent = _sums(Refund.objects.filter(status=Refund.Status.SUCCEEDED))
    in_flight = _sums(Refund.objects.filter(status=Refund.Status.PENDING))
    touched = Booking.objects.filter(
        Q(amount_paid__gt=0)
        | Q(amount_earned__gt=0)
        | Q(amount_refunded__gt=0)
        | Q(pk__in=Payment.objects.filter(status=Payment.Status.SUCCEEDED).values("booking_id"))
        | Q(pk__in=Settlement.objects.values("booking_id"))
        | Q(pk__in=Refund.objects.values("booking_id"))
    ).only("public_id", "status", "amount_paid", "amount_earned", "amount_refunded")

    captured_total = accounted_total = counted_total = refunds_total = open_escrow = _zero()
    open_bookings = 0
    differ: list[dict] = []
    miscounted: list[dict] = []
    for booking in touched.order_by("pk").iterator():
        pk = booking.pk
        is_open = booking.status in Booking.PAID_LIVE
        escrow = money.usd(booking.escrow) if is_open else _zero()
        captured = paid.get(pk, _zero())
        parts = {
            "earned": earned.get(pk, _zero()),
            "refunds_sent": sent.get(pk, _zero()),
            "refunds_in_flight": in_flight.get(pk, _zero()),
            "escrow": escrow,
        }
        accounted = sum(parts.values(), _zero())
        captured_total += captured
        accounted_total += accounted
        if is_open:
            open_bookings += 1
            open_escrow += escrow
        if captured != accounted:
            differ.append(
                {
                    "booking": str(booking.public_id),
                    "id": pk,
                    "status": booking.status,
                    "captured": str(captured),
                    "accounted": str(accounted),
                    **{k: str(v) for k, v in parts.items()},
                    "escrow_left_on_booking": str(money.usd(booking.escrow)),
                }
            )
        counted = money.usd(booking.amount_refunded)
        refunds = parts["refunds_sent"] + parts["refunds_in_flight"]
        counted_total += counted
        refunds_total += refunds
        if counted != refunds:
            miscounted.append(
                {
                    "booking": str(booking.public_id),
                    "id": pk,
                    "status": booking.status,
                    "counted": str(counted),
                    "refunds_sent": str(parts["refunds_sent"]),
                    "refunds_in_flight": str(parts["refunds_in_flight"]),
                }
            )

    checks = [
        _check(BOOKINGS, captured_total, accounted_total, not differ, differ),
        _escrow_check(open_escrow, open_bookings, sum(in_flight.values(), _zero())),
        _check(REFUNDS_COUNTED, counted_total, refunds_total, not miscounted, miscounted),
    ]
    failed = [
        {
            "refund": r.idempotency_key,
            "id": r.pk,
            "booking": str(r.booking.public_id),
            "amount": str(money.usd(r.amount)),
            "attempt": r.attempt,
            "failure": r.failure_message,
            "retry_at": r.next_attempt_at.isoformat() if r.next_attempt_at else "an operator must act",
        }
        for r in Refund.objects.filter(status=Refund.Status.FAILED).select_related("booking").order_by("pk")
    ]
    checks.append(_check(REFUNDS_FAILED, 0, len(failed), not failed, failed))
    minutes = settings.MONEY_RECONCILE_REFUND_PENDING_MINUTES
    stale = [
        {
            "refund": r.idempotency_key,
            "id": r.pk,
            "booking": str(r.booking.public_id),
            "amount": str(money.usd(r.amount)),
            "pending_since": r.created_at.isoformat(),
        }
        for r in Refund.objects.filter(status=Refund.Status.PENDING, created_at__lt=now - timedelta(minutes=minutes))
        .select_related("booking")
        .order_by("pk")
    ]
    checks.append(_check(REFUNDS_STALE, 0, len(stale), not stale, stale, threshold_minutes=minutes))
    return checks


def _escrow_check(open_escrow: Decimal, open_bookings: int, refunds_in_flight: Decimal) -> dict:
    ledger = -money.usd(money.sum_of(Posting.objects.filter(account__code="renter_escrow"), "amount"))
    not_journaled = {
        "payments": money.usd(
            money.sum_of(Payment.objects.filter(status=Payment.Status.SUCCEEDED, journal__isnull=True))
        ),
        "settlements": money.usd(money.sum_of(Settlement.objects.filter(journal__isnull=True), "gross_amount")),
        "refunds": money.usd(money.sum_of(Refund.objects.filter(status=Refund.Status.SUCCEEDED, journal__isnull=True))),
    }
    actual = ledger + not_journaled["payments"] - not_journaled["settlements"] - not_journaled["refunds"]
    expected = open_escrow + refunds_in_flight
    details = [
        {
            "ledger_renter_escrow": str(ledger),
            "not_yet_journaled_payments": str(not_journaled["payments"]),
            "not_yet_journaled_settlements": str(not_journaled["settlements"]),
            "not_yet_journaled_refunds": str(not_journaled["refunds"]),
            "open_bookings": open_bookings,
            "open_bookings_escrow": str(open_escrow),
            "refunds_in_flight": str(refunds_in_flight),
            "difference": str(actual - expected),
        }
    ]
    return _check(ESCROW, expected, actual, expected == actual, details)


# --- 4: USDai in the ledger -----------------------------------------------------------


def _entry_amounts(prefix: str, line: str) -> dict[int, Decimal]:
    """Source pk → amount of each ledger entry keyed ``<prefix><pk>`` (its gateway_clearing posting)."""
    rows = Posting.objects.filter(
        entry__key__startswith=prefix, account__code="gateway_clearing", line=line
    ).values_list("entry__key", "amount")
    amounts: dict[int, Decimal] = {}
    for key, amount in rows:
        pk = int(key.removeprefix(prefix))
        amounts[pk] = amounts.get(pk, _zero()) + abs(money.usd(amount))
    return amounts


def _usdai_check() -> dict:
    spends = _entry_amounts("usdai:spend:", "usdai_spend")
    buys = _entry_amounts("usdai:buy:", "usdai_buy")
    # Entries whose key names a source without a gateway_clearing line of that purpose.
    for prefix, found in (("usdai:spend:", spends), ("usdai:buy:", buys)):
        for key in JournalEntry.objects.filter(key__startswith=prefix).values_list("key", flat=True):
            found.setdefault(int(key.removeprefix(prefix)), _zero())
    payments = {
        pk: (money.usd(amount), status, str(booking))
        for pk, amount, status, booking in Payment.objects.filter(
            Q(gateway="usdai", status=Payment.Status.SUCCEEDED) | Q(pk__in=list(spends))
        ).values_list("pk", "amount", "status", "booking__public_id")
    }
    purchases = {
        pk: (money.usd(amount), status)
        for pk, amount, status in UsdaiPurchase.objects.filter(
            Q(status=UsdaiPurchase.Status.SUCCEEDED) | Q(pk__in=list(buys))
        ).values_list("pk", "amount", "status")
    }
    problems: list[dict] = []
    for pk, booked in sorted(spends.items()):
        row = payments.get(pk)
        if row is None:
            problems.append({"entry": f"usdai:spend:{pk}", "amount": str(booked), "problem": "no such payment"})
        elif row[1] != Payment.Status.SUCCEEDED or row[0] != booked:
            problems.append(
                {
                    "entry": f"usdai:spend:{pk}",
                    "amount": str(booked),
                    "booking": row[2],
                    "payment_amount": str(row[0]),
                    "payment_status": row[1],
                    "problem": "the payment is not a succeeded one of this amount",
                }
            )
    problems += [
        {"payment": pk, "booking": booking, "amount": str(amount), "problem": "a USDai payment not in the ledger"}
        for pk, (amount, status, booking) in sorted(payments.items())
        if status == Payment.Status.SUCCEEDED and pk not in spends
    ]
    for pk, booked in sorted(buys.items()):
        row = purchases.get(pk)
        if row is None or row[1] != UsdaiPurchase.Status.SUCCEEDED or row[0] != booked:
            problems.append(
                {
                    "entry": f"usdai:buy:{pk}",
                    "amount": str(booked),
                    "purchase_status": row[1] if row else "missing",
                    "purchase_amount": str(row[0]) if row else "",
                    "problem": "no succeeded purchase of this amount",
                }
            )
    problems += [
        {"purchase": pk, "amount": str(amount), "problem": "a succeeded purchase not in the ledger"}
        for pk, (amount, status) in sorted(purchases.items())
        if status == UsdaiPurchase.Status.SUCCEEDED and pk not in buys
    ]
    expected = sum((a for a, s, _ in payments.values() if s == Payment.Status.SUCCEEDED), _zero()) + sum(
        (a for a, s in purchases.values() if s == UsdaiPurchase.Status.SUCCEEDED), _zero()
    )
    actual = sum(spends.values(), _zero()) + sum(buys.values(), _zero())
    return _check(USDAI, expected, actual, not problems, problems)


# --- 7: owner payouts ------------------------------------------------------------------------


def _payouts_check() -> dict:
    entries = {
        int(key.removeprefix("payout:")): money.usd(amount)
        for key, amount in Posting.objects.filter(
            entry__key__startswith="payout:", account__code__startswith="owner_payable:"
        ).values_list("entry__key", "amount")
    }
    mints = {
        key.removeprefix("payout:").removesuffix(":mint"): op
        for key, op in ChainOp.objects.filter(key__startswith="payout:").values_list("key", "pk")
    }
    mint_wei = dict(ChainOp.objects.filter(key__startswith="payout:").values_list("pk", "args"))
    mint_failed = set(
        ChainOp.objects.filter(key__startswith="payout:", status=ChainOp.Status.FAILED).values_list("pk", flat=True)
    )
    problems: list[dict] = []
    paid_total = booked_total = in_transit = _zero()
    payouts = Payout.objects.select_related("sepa_file").order_by("pk")
    for payout in payouts.iterator():
        row = {"payout": payout.pk, "company": payout.company_id, "amount": str(payout.amount), "rail": payout.rail}
        booked = entries.pop(payout.pk, None)
        op_id = mints.pop(str(payout.pk), None)
        if payout.status not in Payout.PAID:
            if booked is not None or op_id is not None or payout.sepa_file_id:
                problems.append({**row, "status": payout.status, "problem": "not paid, yet money moved for it"})
            continue
        paid_total += money.usd(payout.amount)
        booked_total += booked or _zero()
        if booked != money.usd(payout.amount):
            problems.append({**row, "ledger": str(booked), "problem": "its ledger entry is missing or differs"})
        if payout.rail == Payout.Rail.USDAI:
            args = mint_wei.get(op_id) or []
            if op_id is None or op_id != payout.op_id or int(args[1]) != usd_to_wei(payout.amount):
                problems.append({**row, "problem": "its outbox mint is missing or of another amount"})
            elif op_id in mint_failed:
                problems.append({**row, "chain_op": op_id, "problem": "its mint failed on chain"})
        else:
            sepa_file = payout.sepa_file
            if sepa_file is None or not payout.end_to_end_id:
                problems.append({**row, "problem": "it is in no SEPA file"})
            elif sepa_file.xml and f"<EndToEndId>{payout.end_to_end_id}</EndToEndId>" not in sepa_file.xml:
                problems.append({**row, "sepa_file": sepa_file.pk, "problem": "its SEPA file has no line for it"})
            elif sepa_file.sent_at is None:
                in_transit += money.usd(payout.amount)
    problems += [{"entry": f"payout:{pk}", "problem": "a payout entry without its paid payout"} for pk in entries]
    problems += [{"chain_op": op, "problem": "a payout mint without its paid payout"} for op in mints.values()]
    ledger_transit = -money.usd(money.sum_of(Posting.objects.filter(account__code="payouts_in_transit")))
    if ledger_transit != in_transit:
        problems.append(
            {"ledger_in_transit": str(ledger_transit), "unsent_lines": str(in_transit), "problem": "in transit differs"}
        )
    return _check(PAYOUTS, paid_total, booked_total, not problems, problems)


# --- 5: captured charges at the gateway -------------------------------------------------


def _card_gateways(since: datetime) -> list[str]:
    used = set(Payment.objects.filter(created_at__gte=since).values_list("gateway", flat=True))
    used |= set(UsdaiPurchase.objects.filter(created_at__gte=since).values_list("gateway", flat=True))
    names = (used | {settings.PAYMENT_GATEWAY}) & set(settings.PAYMENT_GATEWAYS)
    return sorted(names - {"usdai"})  # USDai payments are in the ledger: check 4


def _charges_check(now: datetime) -> dict:
    since = now - timedelta(hours=settings.MONEY_RECONCILE_CHARGES_HOURS)
    problems: list[dict] = []
    captured_total = owned_total = _zero()
    for name in _card_gateways(since):
        listed_at = timezone.now()
        try:
            gateway = get_gateway(name)
            charges = gateway.captured_charges(since=since)
        except (GatewayError, ImproperlyConfigured) as exc:
            problems.append({"gateway": name, "problem": f"could not list the captured charges: {exc}"})
            continue
        # Read after the listing: every row is written before its charge, so none is missing yet.
        refs = [c.reference for c in charges]
        payments = {
            ref: (money.usd(amount), status, str(booking))
            for ref, amount, status, booking in Payment.objects.filter(gateway=name, reference__in=refs).values_list(
                "reference", "amount", "status", "booking__public_id"
            )
        }
        purchases = {
            ref: (money.usd(amount), status, str(pk))
            for ref, amount, status, pk in UsdaiPurchase.objects.filter(gateway=name, reference__in=refs).values_list(
                "reference", "amount", "status", "pk"
            )
        }
        for charge in charges:
            amount = money.usd(charge.amount)
            captured_total += amount
            owner, kind = payments.get(charge.reference), "booking"
            if owner is None:
                owner, kind = purchases.get(charge.reference), "purchase"
            if owner is None:
                owner, kind = _owner_not_yet_recorded(name, charge), "in flight"
            row = {"gateway": name, "charge": charge.reference, "amount": str(amount)}
            if owner is None:
                problems.append({**row, "booking_id": charge.booking_id, "problem": "no booking or purchase owns it"})
            elif owner[0] != amount or owner[1] not in _OWNED:
                problems.append(
                    {
                        **row,
                        kind: owner[2],
                        "recorded_amount": str(owner[0]),
                        "recorded_status": owner[1],
                        "problem": f"its {kind} records another amount or a failure",
                    }
                )
            else:
                owned_total += amount
        problems += [
            {"gateway": name, "payment": ref, "booking": str(booking), "problem": "succeeded here, not captured there"}
            for ref, booking in Payment.objects.filter(
                gateway=name, status=Payment.Status.SUCCEEDED, created_at__gte=since, updated_at__lt=listed_at
            )
            .exclude(reference__in=refs)
            .values_list("reference", "booking__public_id")
        ]
    return _check(CHARGES, captured_total, owned_total, not problems, problems, since=since.isoformat())


def _owner_not_yet_recorded(gateway: str, charge) -> tuple[Decimal, str, str] | None:
    """A charge whose reference is not recorded yet (the process stopped after the charge):
    the pending payment or purchase its metadata names, without a reference."""
    if charge.booking_id:
        payment = Payment.objects.filter(
            gateway=gateway, booking__public_id=charge.booking_id, status=Payment.Status.PENDING, reference=""
        ).first()
        if payment is not None:
            return money.usd(payment.amount), payment.status, charge.booking_id
    if (purchase_pk := digits(charge.purchase_id)) is not None:
        purchase = UsdaiPurchase.objects.filter(
            pk=purchase_pk, gateway=gateway, status=UsdaiPurchase.Status.PENDING, reference=""
        ).first()
        if purchase is not None:
            return money.usd(purchase.amount), purchase.status, str(purchase.pk)
    return None


# --- 6: pending payments against the gateway ----------------------------------------------


def _pending_check(now: datetime) -> dict:
    minutes = settings.PAYMENT_SWEEP_AFTER_MINUTES
    stale = Payment.objects.filter(status=Payment.Status.PENDING, created_at__lt=now - timedelta(minutes=minutes))
    problems: list[dict] = []
    checked = still_pending = 0
    unreadable = stale.filter(reference="").count()
    for payment in stale.exclude(reference="").select_related("booking").order_by("pk")[:PENDING_BATCH]:
        row = {"payment": payment.pk, "reference": payment.reference, "booking": str(payment.booking.public_id)}
        try:
            status = get_gateway(payment.gateway).retrieve(reference=payment.reference).status
        except PaymentDeclined:
            status = "declined"
        except (GatewayError, ImproperlyConfigured) as exc:
            problems.append({**row, "problem": f"the gateway could not read it back: {exc}"})
            continue
        checked += 1
        if status in (*_FINAL, "declined") and Payment.objects.filter(pk=payment.pk, status="pending").exists():
            problems.append(
                {
                    **row,
                    "gateway": payment.gateway,
                    "gateway_status": status,
                    "amount": str(money.usd(payment.amount)),
                    "pending_since": payment.created_at.isoformat(),
                    "problem": "final at the gateway, still pending here (the payments sweep records it)",
                }
            )
        else:
            still_pending += 1
    return _check(
        PENDING,
        checked,
        still_pending,
        not problems,
        problems,
        threshold_minutes=minutes,
        without_reference=unreadable,
    )


# --- The run and its alerts ----------------------------------------------------------------


def money_reconcile(*, now: datetime | None = None) -> MoneyReconciliation:
    """Run every check, store the report and raise (or keep, or mark clean) one alert per check."""
    now = now or timezone.now()
    with _snapshot():
        checks = [*_booking_checks(now), _usdai_check(), _payouts_check()]
    checks.append(_charges_check(now))
    checks.append(_pending_check(now))
    mismatches = sum(1 for c in checks if not c["ok"])
    with transaction.atomic():
        report = MoneyReconciliation.objects.create(checks=checks, mismatches=mismatches)
        _alerts_update(report, checks)
    return report


def _alert_message(check: dict) -> str:
    first = check["details"][0] if check["details"] else {}
    detail = ", ".join(f"{k} {v}" for k, v in first.items())
    return f"{check['name']}: expected {check['expected']}, found {check['actual']}; {detail}"[:500]


def _alerts_update(report: MoneyReconciliation, checks: list[dict]) -> None:
    open_alerts = {a.check_name: a for a in MoneyAlert.objects.filter(resolved_at__isnull=True)}
    for check in checks:
        alert = open_alerts.get(check["name"])
        if check["ok"]:
            if alert is not None and alert.cleared_by_id is None:
                MoneyAlert.objects.filter(pk=alert.pk).update(cleared_by=report)
            continue
        message = _alert_message(check)
        if alert is not None:
            MoneyAlert.objects.filter(pk=alert.pk).update(last_seen=report, cleared_by=None, message=message)
            logger.warning("money check still failing (alert %s): %s", alert.pk, message)
            continue
        try:
            with transaction.atomic():
                alert = MoneyAlert.objects.create(
                    check_name=check["name"], message=message, raised_by=report, last_seen=report
                )
        except IntegrityError:
            # A concurrent run raised it first: that open alert is the one.
            MoneyAlert.objects.filter(check_name=check["name"], resolved_at__isnull=True).update(
                last_seen=report, cleared_by=None, message=message
            )
            continue
        logger.error("ALERT money reconciliation: %s", message)


def money_alert_resolve(*, alert: MoneyAlert) -> MoneyAlert:
    """Operator: mark a money alert as dealt with (it stays as history; a check that
    fails again later raises a new one)."""
    if alert.resolved_at is None:
        alert.resolved_at = timezone.now()
        alert.save(update_fields=["resolved_at"])
    return alert
