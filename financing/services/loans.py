"""Loans: application, approval and disbursement.

An owner applies against approved collateral whose lien is free and whose
insurance is in force, for at least ``LOAN_MIN_PRINCIPAL``, at most
``LOAN_MAX_LTV`` of its latest appraisal, and no more than the appraisal's
projected net income can repay: the projected DSCR (net income a month over
the schedule's largest payment) must be at least ``LOAN_MIN_DSCR``; below
``LOAN_WARN_DSCR`` the application is taken with a warning
(``financing.selectors.loans.loan_warnings``). The projection is stored on the loan.
An operator approves: the schedule is fixed (``financing.schedules``), the
lien is set, the server's listing is marked financed, and the principal
leaves the vault in one journal entry (Dr the loan's principal receivable,
Cr vault cash).
"""

import calendar
from datetime import datetime
from decimal import ROUND_DOWN, Decimal

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import OwnerCompany, User
from core.money import CENT
from financing import lock_objects, schedules
from financing.chain.client import usd_to_wei
from financing.models import Appraisal, Collateral, Instalment, Loan
from financing.selectors.loans import MAX_TENOR_MONTHS, borrowing_limit, dscr_shown, loan_projection
from financing.services.ledger import Accounts, Line, journal_post, system_account
from financing.services.liquidity import loan_liquidity_secure
from financing.services.outbox import chainop_enqueue
from financing.services.titles import title_lien
from marketplace.models import Listing


def latest_appraisal(collateral: Collateral) -> Appraisal | None:
    return collateral.appraisals.order_by("-as_of", "-id").first()


def loan_max_amount(
    collateral: Collateral, *, tenor_months: int = MAX_TENOR_MONTHS, kind: str = Loan.Kind.FIXED_PAYMENT
) -> Decimal:
    """What can be borrowed against the collateral now over ``tenor_months``: the lower of the
    LTV and DSCR limits (0 without an appraisal); ``borrowing_limit`` says which binds and why."""
    return borrowing_limit(collateral, tenor_months=tenor_months, kind=kind).maximum


def _collateral_errors(collateral: Collateral, today) -> list[str]:
    problems = []
    if collateral.approved_at is None:
        problems.append("This collateral is waiting for an operator's approval.")
    if collateral.lien != Collateral.Lien.FREE:
        problems.append(f"This collateral is {collateral.get_lien_display().lower()}; it cannot secure another loan.")
    if collateral.insurance_expires <= today:
        problems.append(f"Its insurance lapsed on {collateral.insurance_expires:%Y-%m-%d}; renew it before borrowing.")
    return problems


def loan_apply(
    *,
    owner: OwnerCompany,
    collateral: Collateral,
    amount: Decimal,
    tenor_months: int,
    kind: str = Loan.Kind.FIXED_PAYMENT,
    now: datetime | None = None,
) -> Loan:
    now = now or timezone.now()
    if collateral.server.owner_id != owner.pk:
        raise PermissionDenied("This collateral is not yours.")
    errors: dict[str, list[str]] = {}
    problems = _collateral_errors(collateral, now.date())
    if problems:
        errors["collateral"] = problems
    appraisal = latest_appraisal(collateral)
    terms_ok = 12 <= tenor_months <= 36 and kind in Loan.Kind.values
    if not 12 <= tenor_months <= 36:
        errors["tenor_months"] = ["Choose a tenor of 12 to 36 months."]
    if kind not in Loan.Kind.values:
        errors["kind"] = [f"Choose one of: {', '.join(Loan.Kind.values)}."]
    projection = None
    if amount is None or amount <= 0:
        errors["amount"] = ["Borrow more than zero."]
    elif amount != amount.quantize(CENT):
        errors["amount"] = ["Amounts are in whole cents."]
    elif amount < settings.LOAN_MIN_PRINCIPAL:
        errors["amount"] = [
            f"Borrow at least ${settings.LOAN_MIN_PRINCIPAL:,}: below that a schedule's payments are too small "
            "to service."
        ]
    elif appraisal is None:
        errors["amount"] = ["This collateral has not been appraised yet."]
    elif terms_ok:
        limit = borrowing_limit(collateral, tenor_months=tenor_months, kind=kind)
        projection = loan_projection(appraisal=appraisal, principal=amount, tenor_months=tenor_months, kind=kind)
        if amount > limit.ltv_maximum:
            errors["amount"] = [
                f"At most ${limit.ltv_maximum:,} can be borrowed: {settings.LOAN_MAX_LTV:.0%} of the latest "
                f"appraisal (${appraisal.value:,})."
            ]
            if appraisal.value == 0:
                errors["amount"] += [reason for reason in limit.reasons[:2] if "$0.00" in reason]
        elif not projection.covered:
            errors["amount"] = [
                f"Projected DSCR {dscr_shown(projection.dscr)} is below {settings.LOAN_MIN_DSCR:.2f}: the server's "
                f"projected net income of ${projection.monthly_income:,} a month does not cover the "
                f"${projection.payment:,} payment. At most ${limit.dscr_maximum:,} can be borrowed over "
                f"{tenor_months} months on this schedule."
            ]
    if errors:
        raise ValidationError(errors)
    try:
        return Loan.objects.create(
            owner=owner,
            collateral=collateral,
            appraisal=appraisal,
            principal=amount,
            apr=settings.LOAN_APR,
            tenor_months=tenor_months,
            kind=kind,
            ltv_at_origination=(amount / appraisal.value).quantize(Decimal("0.0001")),
            projected_monthly_income=projection.monthly_income,
            scheduled_payment=projection.payment,
            projected_dscr=projection.dscr.quantize(Decimal("0.0001"), rounding=ROUND_DOWN),
        )
    except IntegrityError as exc:
        raise ValidationError({"collateral": ["This collateral already secures a loan or an application."]}) from exc


def add_months(moment: datetime, months: int) -> datetime:
    """The same day ``months`` later (the month's last day when it is shorter)."""
    month = moment.month - 1 + months
    year, month = moment.year + month // 12, month % 12 + 1
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


def loan_approve(*, loan: Loan, operator: User, now: datetime | None = None) -> Loan:
    """Approve, fix the schedule, pledge the collateral, disburse from the vault."""
    if not operator.is_staff:
        raise PermissionDenied("Only an operator approves loans.")
    now = now or timezone.now()
    with transaction.atomic():
        locked = lock_objects.loan_lock(loan.pk)
        if locked.status != Loan.Status.APPLIED:
            raise ValidationError(
                {"loan": f"This loan is {locked.get_status_display().lower()}, not awaiting approval."}
            )
        collateral = lock_objects.collateral_lock(locked.collateral_id)
        problems = _collateral_errors(collateral, now.date())
        limit = borrowing_limit(collateral, tenor_months=locked.tenor_months, kind=locked.kind)
        if locked.principal < settings.LOAN_MIN_PRINCIPAL:
            problems.append(f"Loans start at ${settings.LOAN_MIN_PRINCIPAL:,}; reject this application.")
        elif locked.principal > limit.maximum:
            problems.append(
                f"The collateral's latest appraisal no longer supports this amount: at most ${limit.maximum:,} "
                f"(the {'DSCR' if limit.binding == 'dscr' else 'LTV'} limit)."
            )
        if problems:
            raise ValidationError({"collateral": problems})
        # The vault lends only cash it has: T-bills are sold first, or the approval is refused.
        loan_liquidity_secure(amount=locked.principal, key=f"loan:{locked.pk}:tbill-recall", now=now)
        rows = schedules.schedule(locked.principal, locked.apr, locked.tenor_months, locked.kind)
        Instalment.objects.bulk_create(
            Instalment(
                loan=locked,
                number=row.number,
                due=add_months(now, row.number),
                payment=row.payment,
                interest=row.interest,
                principal=row.principal,
                balance_after=row.balance_after,
            )
            for row in rows
        )
        locked.status = Loan.Status.ACTIVE
        locked.approved_at = now
        locked.approved_by = operator
        locked.interest_accrued_to = now
        locked.reserve_funded = sum((row.payment for row in rows[: settings.LOAN_RESERVE_MONTHS]), Decimal(0))
        locked.save(update_fields=["status", "approved_at", "approved_by", "interest_accrued_to", "reserve_funded"])
        collateral.lien = Collateral.Lien.PLEDGED
        collateral.save(update_fields=["lien"])
        Listing.objects.filter(server_id=collateral.server_id).update(financed=True)
        # The whole principal leaves the vault; the owner receives it less the reserve,
        # which the platform holds (in its cash) against the loan's debt service.
        accounts = Accounts()
        journal_post(
            key=f"loan:{locked.pk}:disbursement",
            description=f"Disbursement of loan {locked.public_id} to {locked.owner.name}, "
            f"{locked.reserve_funded} held back for the reserve",
            lines=[
                Line(accounts.loan(locked, "principal"), locked.principal, "disbursement"),
                Line(system_account("vault_cash"), -locked.principal, "disbursement"),
                Line(system_account("gateway_clearing"), locked.reserve_funded, "reserve_funding"),
                Line(accounts.loan(locked, "reserve"), -locked.reserve_funded, "reserve_funding"),
            ],
        )
        title_lien(loan=locked, active=True)
        # The principal leaves the vault's cash on chain as it does in the books.
        chainop_enqueue(
            key=f"loan:{locked.pk}:deploy", contract="SUSDai", function="deploy", args=[usd_to_wei(locked.principal)]
        )
    return locked


def loan_reject(*, loan: Loan, operator: User) -> Loan:
    if not operator.is_staff:
        raise PermissionDenied("Only an operator rejects loans.")
    updated = Loan.objects.filter(pk=loan.pk, status=Loan.Status.APPLIED).update(status=Loan.Status.REJECTED)
    if not updated:
        raise ValidationError({"loan": "Only an application can be rejected."})
    loan.refresh_from_db()
    return loan
