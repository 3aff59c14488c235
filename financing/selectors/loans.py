"""Loans, their collateral and where their servers' revenue went, for owner and lender pages."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from core import money
from financing.models import Appraisal, Collateral, JournalEntry, Loan, Posting
from marketplace.models import Server, Settlement

# The window of delivered revenue that appraisals and debt-service coverage look at.
TRAILING_DAYS = 90


def trailing_net_revenue(*, server: Server, until: datetime, days: int = TRAILING_DAYS) -> Decimal:
    """Revenue the server delivered in the window, after the platform fee."""
    gross = money.sum_of(
        Settlement.objects.filter(
            server=server, interval_end__gt=until - timedelta(days=days), interval_end__lte=until
        ),
        "gross_amount",
    )
    return gross * (1 - settings.WATERFALL_PLATFORM_FEE)


WATERFALL_LINES = ("platform_fee", "insurance", "reserve", "interest", "principal", "owner")


@dataclass(frozen=True)
class LoanSummary:
    loan: Loan
    outstanding: Decimal
    interest_accrued: Decimal
    reserve: Decimal
    appraisal: Appraisal | None
    ltv: Decimal | None
    dscr: Decimal | None
    next_instalment: object | None


def loan_summary(loan: Loan, *, now: datetime | None = None) -> LoanSummary:
    now = now or timezone.now()
    codes = [f"principal:{loan.pk}", f"interest:{loan.pk}", f"reserve:{loan.pk}"]
    sums = {
        row["account__code"]: money.usd(row["total"])
        for row in Posting.objects.filter(account__code__in=codes).values("account__code").annotate(total=Sum("amount"))
    }
    outstanding = sums.get(codes[0], Decimal(0))
    appraisal = loan.collateral.appraisals.order_by("-as_of", "-id").first()
    upcoming = list(loan.instalments.filter(due__gt=now).order_by("number")[:3])
    debt_service = sum((i.payment for i in upcoming), Decimal(0))
    net = trailing_net_revenue(server=loan.collateral.server, until=now)
    return LoanSummary(
        loan=loan,
        outstanding=outstanding,
        interest_accrued=sums.get(codes[1], Decimal(0)),
        reserve=-sums.get(codes[2], Decimal(0)),
        appraisal=appraisal,
        ltv=(outstanding / appraisal.value).quantize(Decimal("0.0001")) if appraisal and appraisal.value else None,
        dscr=(net / debt_service).quantize(Decimal("0.01")) if debt_service else None,
        next_instalment=upcoming[0] if upcoming else None,
    )


def loan_book() -> list[LoanSummary]:
    loans = Loan.objects.exclude(status__in=[Loan.Status.REJECTED]).select_related("owner", "collateral__server")
    return [loan_summary(loan) for loan in loans.order_by("-applied_at")]


def loan_revenue_by_month(loan: Loan) -> list[tuple[str, dict[str, Decimal]]]:
    """Where the server's settled revenue went, month by month (the waterfall's lines)."""
    rows = (
        Posting.objects.filter(
            entry__settlement__server_id=loan.collateral.server_id, line__in=("gross", *WATERFALL_LINES)
        )
        .values_list("entry__settlement__interval_end", "line", "amount")
        .order_by("entry__settlement__interval_end")
    )
    months: dict[str, dict[str, Decimal]] = defaultdict(lambda: dict.fromkeys(("gross", *WATERFALL_LINES), Decimal(0)))
    for end, line, amount in rows:
        months[f"{end:%Y-%m}"][line] += abs(amount)
    return sorted(months.items())


def loan_flow_totals(loan: Loan) -> dict[str, Decimal]:
    totals = dict.fromkeys(("gross", *WATERFALL_LINES), Decimal(0))
    for _, month in loan_revenue_by_month(loan):
        for line, amount in month.items():
            totals[line] += amount
    return totals


def loan_repayments(loan: Loan) -> list[JournalEntry]:
    """The entries that paid the loan's interest or principal (revenue and reserve draws)."""
    return list(
        JournalEntry.objects.filter(
            postings__account__code__in=[f"principal:{loan.pk}", f"interest:{loan.pk}"],
            postings__amount__lt=0,
        )
        .distinct()
        .order_by("-id")[:200]
    )


def owner_collateral(owner) -> list[Collateral]:
    return list(Collateral.objects.filter(server__owner=owner).select_related("server").order_by("server__hostname"))


def appraisal_history(collateral: Collateral, days: int = 365) -> list[Appraisal]:
    since = timezone.now() - timedelta(days=days)
    return list(collateral.appraisals.filter(as_of__gte=since).order_by("as_of"))


def insurance_lapsed(summary: LoanSummary, today=None) -> bool:
    """Expired insurance flags a live loan (new loans are refused outright)."""
    return summary.loan.collateral.insurance_expires <= (today or timezone.now().date())


def margin_call(summary: LoanSummary) -> bool:
    return summary.ltv is not None and summary.ltv > settings.LOAN_MAINTENANCE_LTV
