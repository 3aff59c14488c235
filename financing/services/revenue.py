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

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from financing import waterfall
from financing.models import Loan
from financing.services.ledger import Line, journal_post, owner_payable_account, system_account
from financing.services.servicing import interest_accrue, loan_for_server, loan_needs, repayment_lines
from marketplace.models import Payment, Refund, Settlement


def _rates() -> waterfall.Rates:
    return waterfall.Rates(
        platform_fee=settings.WATERFALL_PLATFORM_FEE,
        insurance=settings.WATERFALL_INSURANCE,
        sweep_share=settings.WATERFALL_SWEEP_SHARE,
        dscr_target=settings.WATERFALL_DSCR_TARGET,
    )


def _locked_batch(queryset, batch: int):
    return list(queryset.select_for_update(skip_locked=True, of=("self",)).order_by("pk")[:batch])


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
            journal_post(
                key=f"refund:{refund.pk}",
                description=f"Refund ({refund.get_reason_display().lower()}) for booking {refund.booking.public_id}",
                lines=[
                    Line(system_account("renter_escrow"), refund.amount, "refund"),
                    Line(system_account("gateway_clearing"), -refund.amount, "refund"),
                ],
                refund=refund,
            )
            done += 1
    return done


def settlements_journal(*, batch: int = 500) -> int:
    """Run unprocessed settlements through the waterfall and stamp them processed.

    A settlement on a server whose collateral secures a live loan takes the
    financed path: the loan's row is locked (its revenue is applied one
    settlement at a time), interest is accrued to the settlement's end, and
    the loan's needs decide the split.
    """
    rates = _rates()
    now = timezone.now()
    done = 0
    with transaction.atomic():
        rows = _locked_batch(
            Settlement.objects.filter(processed_at__isnull=True).select_related("server__owner", "booking"), batch
        )
        for settlement in rows:
            _journal_settlement(settlement, rates)
            done += 1
        Settlement.objects.filter(pk__in=[s.pk for s in rows]).update(processed_at=now)
    return done


def _journal_settlement(settlement: Settlement, rates: waterfall.Rates) -> None:
    loan = loan_for_server(settlement.server_id)
    lines = [Line(system_account("renter_escrow"), settlement.gross_amount, "gross")]
    if loan is None:
        parts = waterfall.split(settlement.gross_amount, rates=rates)
    else:
        loan = Loan.objects.select_for_update().select_related("collateral__server", "owner").get(pk=loan.pk)
        at = max(settlement.interval_end, loan.interest_accrued_to or settlement.interval_end)
        interest_accrue(loan=loan, until=at)
        parts = waterfall.split(settlement.gross_amount, rates=rates, loan=loan_needs(loan=loan, at=at))
        lines += [Line(system_account("insurance_payable"), -parts["insurance"], "insurance")]
        lines += repayment_lines(loan=loan, parts=parts)
    lines += [
        Line(system_account("platform_revenue"), -parts["platform_fee"], "platform_fee"),
        Line(owner_payable_account(settlement.server.owner), -parts["owner"], "owner"),
    ]
    journal_post(
        key=f"settlement:{settlement.pk}",
        description=f"Revenue of booking {settlement.booking.public_id}, {settlement.gpu_seconds} GPU-seconds"
        + (f", loan {loan.public_id}" if loan else ""),
        lines=lines,
        settlement=settlement,
    )


def ledger_pull(*, batch: int = 500) -> dict[str, int]:
    """Periodic: journal payments, then settlements, then refunds."""
    return {
        "payments": payments_journal(batch=batch),
        "settlements": settlements_journal(batch=batch),
        "refunds": refunds_journal(batch=batch),
    }
