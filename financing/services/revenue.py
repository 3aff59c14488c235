"""Pull the marketplace's money movements into the ledger, exactly once.

Financing reads rows the marketplace wrote and it has not journaled yet —
succeeded payments (into renter escrow), settlements (out of escrow through
the waterfall) and succeeded refunds (out of escrow back to the renter) —
and journals each in one transaction with the row locked ``FOR UPDATE SKIP
LOCKED``, so two workers never take the same row. The journal entry's
one-to-one link to its source (and its idempotency key) make a replay a
no-op; settlements are also stamped ``processed_at``.

A settlement on a financed server runs the full waterfall against its loan
(``financing.services.servicing``).
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Min
from django.utils import timezone

from financing import lock_objects, waterfall
from financing.services.ledger import Accounts, EntryBatch, Line, journal_post, system_account
from financing.services.servicing import LoanBook, live_loans_for_servers
from financing.services.wallets import usdai_refund
from marketplace.models import Payment, Refund, Settlement


def _rates() -> waterfall.Rates:
    return waterfall.Rates(
        platform_fee=settings.WATERFALL_PLATFORM_FEE,
        insurance=settings.WATERFALL_INSURANCE,
        sweep_share=settings.WATERFALL_SWEEP_SHARE,
        dscr_target=settings.WATERFALL_DSCR_TARGET,
    )


def _locked_batch(queryset, batch: int):
    return list(lock_objects.work_claim(queryset, batch=batch))


def payments_journal(*, batch: int = 500) -> int:
    done = 0
    with transaction.atomic():
        for payment in _locked_batch(
            Payment.objects.filter(status=Payment.Status.SUCCEEDED, journal__isnull=True), batch
        ):
            journal_post(
                key=f"payment:{payment.pk}",
                description=f"Payment {payment.reference} for booking {payment.booking.public_id}",
                lines=[
                    Line(system_account("gateway_clearing"), payment.amount, "payment"),
                    Line(system_account("renter_escrow"), -payment.amount, "payment"),
                ],
                payment=payment,
            )
            done += 1
    return done


def refunds_journal(*, batch: int = 500) -> int:
    done = 0
    with transaction.atomic():
        for refund in _locked_batch(Refund.objects.filter(status=Refund.Status.SUCCEEDED, journal__isnull=True), batch):
            lines = [
                Line(system_account("renter_escrow"), refund.amount, "refund"),
                Line(system_account("gateway_clearing"), -refund.amount, "refund"),
            ]
            if refund.payment.gateway == "usdai":
                lines = usdai_refund(refund=refund, lines=lines)
            journal_post(
                key=f"refund:{refund.pk}",
                description=f"Refund ({refund.get_reason_display().lower()}) for booking {refund.booking.public_id}",
                lines=lines,
                refund=refund,
            )
            done += 1
    return done


@dataclass(frozen=True)
class _Row:
    """What the waterfall reads of a settlement (plain values: batches are large)."""

    pk: int
    server_id: int
    owner_id: int
    owner_name: str
    booking: str
    interval_end: datetime
    gpu_seconds: int
    gross: Decimal


def settlements_journal(*, batch: int = 500) -> int:
    """Run unprocessed settlements through the waterfall and stamp them processed.

    A settlement on a server whose collateral secures a live loan takes the
    financed path: the loan's row is locked for the batch (its revenue is
    applied in settlement order), interest is accrued to each settlement's
    end, and the loan's needs at that moment decide the split. The batch's
    entries are written in bulk at the end of its transaction.
    """
    rates = _rates()
    now = timezone.now()
    with transaction.atomic():
        rows = [
            _Row(*values)
            for values in lock_objects.work_claim(Settlement.objects.filter(processed_at__isnull=True)).values_list(
                "pk",
                "server_id",
                "server__owner_id",
                "server__owner__name",
                "booking__public_id",
                "interval_end",
                "gpu_seconds",
                "gross_amount",
            )[:batch]
        ]
        if not rows:
            return 0
        loans = live_loans_for_servers(row.server_id for row in rows)
        rows = _in_settlement_order(rows, loans)
        if not rows:
            return 0
        accounts = Accounts()
        book = LoanBook(
            list(loans.values()),
            window_start=min(row.interval_end for row in rows),
            window_end=max(row.interval_end for row in rows),
            accounts=accounts,
        )
        entries = EntryBatch()
        for row in rows:
            _journal_settlement(row, loans.get(row.server_id), book, accounts, entries, rates)
        entries.flush()
        book.save()
        Settlement.objects.filter(pk__in=[row.pk for row in rows]).update(processed_at=now)
    return len(rows)


def _in_settlement_order(rows: list[_Row], loans: dict) -> list[_Row]:
    """The claimed rows whose loan can take them now: a financed server's settlements are applied
    in settlement order, so when another worker holds an earlier one (it claimed it and waits
    for the loan this worker locked), this worker leaves that server's later ones for its next
    run instead of applying them first."""
    claimed = {row.pk for row in rows}
    first = {}
    for row in rows:
        first.setdefault(row.server_id, row.pk)
    held_elsewhere = {
        server_id
        for server_id, earliest in Settlement.objects.filter(processed_at__isnull=True, server_id__in=list(loans))
        .exclude(pk__in=claimed)
        .values("server_id")
        .annotate(earliest=Min("pk"))
        .values_list("server_id", "earliest")
        if earliest < first[server_id]
    }
    return [row for row in rows if row.server_id not in held_elsewhere]


def _journal_settlement(row: _Row, loan, book, accounts, entries, rates) -> None:
    lines = [Line(accounts.system("renter_escrow"), row.gross, "gross")]
    if loan is None:
        parts = waterfall.split(row.gross, rates=rates)
    else:
        at = max(row.interval_end, loan.interest_accrued_to or row.interval_end)
        accrual = book.accrue(loan, at)
        if accrual:
            entries.add(
                key=f"loan:{loan.pk}:accrual:{at.isoformat()}",
                description=f"Interest on loan {loan.public_id} to {at:%Y-%m-%d %H:%M:%S}",
                lines=accrual,
            )
        parts = waterfall.split(row.gross, rates=rates, loan=book.needs(loan, at))
        lines += [Line(accounts.system("insurance_payable"), -parts["insurance"], "insurance")]
        lines += book.apply(loan, parts)
    lines += [
        Line(accounts.system("platform_revenue"), -parts["platform_fee"], "platform_fee"),
        Line(accounts.owner_payable(row.owner_id, row.owner_name), -parts["owner"], "owner"),
    ]
    entries.add(
        key=f"settlement:{row.pk}",
        description=f"Revenue of booking {row.booking}, {row.gpu_seconds} GPU-seconds"
        + (f", loan {loan.public_id}" if loan else ""),
        lines=lines,
        settlement_id=row.pk,
    )


def ledger_pull(*, batch: int = 500) -> dict[str, int]:
    """Periodic: journal payments, then settlements, then refunds."""
    return {
        "payments": payments_journal(batch=batch),
        "settlements": settlements_journal(batch=batch),
        "refunds": refunds_journal(batch=batch),
    }
