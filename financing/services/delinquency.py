"""Servicing runs, default and foreclosure.

``loans_service`` (daily, and on demand) brings every live loan up to date:
interest (and grace-rate interest) accrued to now; after the grace period the
debt-service reserve pays overdue interest, then overdue principal; days past
due are recorded; a loan ``LOAN_DEFAULT_DPD`` days past due defaults; a loan
with nothing outstanding is repaid, its collateral's lien is cleared and
what its reserve still holds is released to the owner.

``loan_foreclose`` (an operator, on a defaulted loan): the lien becomes
foreclosed and the server passes to the protocol's own owner company. Its
listing stays live and its bookings run on, so renters are not disturbed;
the waterfall then sends everything after costs to the loan until it is
recovered, and what is left after that is the protocol's.
"""

from datetime import datetime

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import OwnerCompany, User
from financing import lock_objects
from financing.models import Collateral, Loan
from financing.services.ledger import Accounts, EntryBatch
from financing.services.losses import (
    first_loss_close,
    foreclosure_lines,
    impairment_lines,
    non_accrual_lines,
    recovery_values,
)
from financing.services.servicing import LoanBook
from financing.services.titles import title_foreclose, title_lien
from marketplace.models import Listing, Server


def loans_service(*, now: datetime | None = None) -> dict[str, int]:
    now = now or timezone.now()
    summary = {"serviced": 0, "reserve_draws": 0, "defaulted": 0, "repaid": 0}
    with transaction.atomic():
        loans = list(
            lock_objects.loans_lock(
                Loan.objects.filter(
                    status__in=[Loan.Status.ACTIVE, Loan.Status.DEFAULTED, Loan.Status.FORECLOSED]
                ).select_related("collateral", "owner")
            )
        )
        if not loans:
            return summary
        accounts = Accounts()
        book = LoanBook(loans, window_start=now, window_end=now, accounts=accounts)
        entries = EntryBatch()
        stamp = now.isoformat()
        repaid: list[Loan] = []
        recoveries = recovery_values(loans)
        for loan in loans:
            accrual = book.accrue(loan, now)
            if accrual:
                entries.add(
                    key=f"loan:{loan.pk}:accrual:{stamp}",
                    description=f"Interest on loan {loan.public_id}",
                    lines=accrual,
                )
            draw = book.draw_reserve(loan, now)
            if draw:
                entries.add(
                    key=f"loan:{loan.pk}:reserve-draw:{stamp}",
                    description=f"Reserve pays overdue debt service of loan {loan.public_id}",
                    lines=draw,
                )
                summary["reserve_draws"] += 1
            loan.days_past_due = book.days_past_due(loan, now)
            state = book.states[loan.pk]
            if state.principal <= 0 and state.interest <= 0 and state.claim <= 0:
                if loan.status != Loan.Status.FORECLOSED:  # a foreclosed server stays the protocol's
                    Collateral.objects.filter(pk=loan.collateral_id).update(lien=Collateral.Lien.FREE)
                    title_lien(loan=loan, active=False)
                    release = book.release_reserve(loan)
                    if release:
                        entries.add(
                            key=f"loan:{loan.pk}:reserve-release",
                            description=f"Reserve of repaid loan {loan.public_id} released to {loan.owner.name}",
                            lines=release,
                        )
                        loan.reserve_released_at = now
                loan.status, loan.repaid_at = Loan.Status.REPAID, now
                Listing.objects.filter(server_id=loan.collateral.server_id).update(financed=False)
                repaid.append(loan)
                summary["repaid"] += 1
            elif loan.status == Loan.Status.ACTIVE and loan.days_past_due >= settings.LOAN_DEFAULT_DPD:
                loan.status, loan.defaulted_at = Loan.Status.DEFAULTED, now
                summary["defaulted"] += 1
            # Losses follow the loan's condition: interest a defaulted loan did not pay leaves
            # the books, and the allowance moves to the share of the expected loss its days
            # past due call for (back to nothing when it is current or repaid).
            loss_lines = non_accrual_lines(book, loan) + impairment_lines(book, loan, recoveries[loan.pk])
            if loss_lines:
                entries.add(
                    key=f"loan:{loan.pk}:losses:{stamp}",
                    description=f"Loss recognition on loan {loan.public_id}",
                    lines=loss_lines,
                )
            summary["serviced"] += 1
        entries.flush()
        for loan in repaid:
            first_loss_close(book=book, loan=loan, now=now)
        book.save()
        Loan.objects.bulk_update(loans, ["status", "days_past_due", "defaulted_at", "repaid_at", "reserve_released_at"])
    return summary


def protocol_owner() -> OwnerCompany:
    company, _ = OwnerCompany.objects.get_or_create(name=settings.PROTOCOL_OWNER_NAME)
    return company


def loan_foreclose(*, loan: Loan, operator: User, now: datetime | None = None) -> Loan:
    if not operator.is_staff:
        raise PermissionDenied("Only an operator forecloses.")
    now = now or timezone.now()
    try:
        with transaction.atomic():
            locked = lock_objects.loan_lock(loan.pk)
            if locked.status != Loan.Status.DEFAULTED:
                raise ValidationError({"loan": "Only a defaulted loan can be foreclosed."})
            collateral = lock_objects.collateral_lock(locked.collateral_id)
            locked.status, locked.foreclosed_at = Loan.Status.FORECLOSED, now
            locked.save(update_fields=["status", "foreclosed_at"])
            book = LoanBook([locked], window_start=now, window_end=now, accounts=Accounts())
            lines = foreclosure_lines(book, locked)
            if lines:
                entries = EntryBatch()
                entries.add(
                    key=f"loan:{locked.pk}:foreclosure",
                    description=f"Loss waterfall at the foreclosure of loan {locked.public_id}",
                    lines=lines,
                )
                entries.flush()
            collateral.lien = Collateral.Lien.FORECLOSED
            collateral.save(update_fields=["lien"])
            Server.objects.filter(pk=collateral.server_id).update(owner=protocol_owner())
            title_foreclose(loan=locked)
    except IntegrityError as exc:
        raise ValidationError(
            {"loan": "The protocol already owns a server with this hostname; rename it first."}
        ) from exc
    return locked
