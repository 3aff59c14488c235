"""Loans, their collateral and where their servers' revenue went, for owner and lender pages."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal

from django.conf import settings
from django.db.models import Q, Sum
from django.utils import timezone

from core import money
from financing import schedules
from financing.chart_of_accounts import owner_payable_code
from financing.models import Appraisal, Collateral, FirstLoss, InsuranceClaim, JournalEntry, Loan, Posting
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
MAX_TENOR_MONTHS = 36


@dataclass(frozen=True)
class Projection:
    """Debt-service coverage projected at application: the appraisal's net income a
    month over the schedule's largest payment."""

    monthly_income: Decimal
    payment: Decimal
    dscr: Decimal  # exact; shown to two places

    @property
    def covered(self) -> bool:
        return self.dscr >= settings.LOAN_MIN_DSCR

    @property
    def thin(self) -> bool:
        return self.dscr < settings.LOAN_WARN_DSCR


def dscr_shown(dscr: Decimal) -> Decimal:
    """Two places, rounded down: a DSCR of 0.999 is never shown as 1.00."""
    return dscr.quantize(Decimal("0.01"), rounding=ROUND_DOWN)


def monthly_income(appraisal: Appraisal | None) -> Decimal:
    if appraisal is None:
        return Decimal("0.00")
    return (max(appraisal.annual_net_income, Decimal(0)) / 12).quantize(money.CENT, rounding=ROUND_DOWN)


def loan_projection(*, appraisal: Appraisal, principal: Decimal, tenor_months: int, kind: str) -> Projection:
    income = monthly_income(appraisal)
    payment = schedules.largest_payment(principal, settings.LOAN_APR, tenor_months, kind)
    return Projection(monthly_income=income, payment=payment, dscr=income / payment if payment else Decimal(0))


@dataclass(frozen=True)
class BorrowingLimit:
    """What can be borrowed against a collateral record, and what limits it: the
    lower of the LTV limit on the appraisal and the largest principal whose
    payment the projected net income covers at the minimum DSCR."""

    appraisal: Appraisal | None
    tenor_months: int
    kind: str
    ltv_limit: Decimal
    ltv_maximum: Decimal
    monthly_income: Decimal
    min_dscr: Decimal
    dscr_maximum: Decimal
    maximum: Decimal
    minimum_principal: Decimal
    binding: str  # "ltv", "dscr" or "appraisal" (none yet)
    valuation: str  # "income" or "depreciation": which value the appraisal took
    reasons: tuple[str, ...]

    @property
    def below_minimum(self) -> bool:
        return self.maximum < self.minimum_principal


def _income_reason(a: Appraisal) -> str:
    if a.income_value > 0:
        if a.income_approach == "trailing":
            basis = f"this server's own record over the last {a.trailing_days} days"
        else:
            forward = (
                f"{a.gpu_count} × {a.gpu_model} at ${a.rate:.2f}/GPU-hour × {a.utilisation:.0%} utilisation, "
                f"${a.net_per_gpu_hour:.4f}/GPU-hour net of fee, insurance and power and hosting"
            )
            basis = (
                f"the market forward ({forward})"
                if a.income_approach == "forward"
                else f"this server's {a.history_days} days on the market, the rest of the window at the market "
                f"forward ({forward})"
            )
        return (
            f"Income value ${a.income_value:,}: ${a.annual_net_income:,} a year of net income from {basis}, "
            f"valued over the remaining {a.remaining_life_years:.2f} years at {a.discount_rate:.0%}."
        )
    if a.gpu_count == 0:
        why = "the server has no GPU in service"
    elif a.remaining_life_years <= 0:
        why = "the hardware is past its useful life"
    elif a.income_approach != "forward" and a.history_days >= a.trailing_days:
        why = f"over the last {a.trailing_days} days on the market its rent did not cover its costs"
    elif a.rate <= 0:
        why = f"there is no market rate for {a.gpu_model} ({a.market_rate_source})"
    elif a.net_per_gpu_hour <= 0:
        why = (
            f"${a.rate}/GPU-hour at {a.utilisation:.0%} utilisation, less fees and insurance, does not cover "
            f"${a.opex_per_gpu_hour}/GPU-hour of power and hosting"
        )
    else:
        why = "its projected net income is not positive"
    return f"Income value $0.00: {why}."


def borrowing_limit(
    collateral: Collateral, *, tenor_months: int = MAX_TENOR_MONTHS, kind: str = Loan.Kind.FIXED_PAYMENT
) -> BorrowingLimit:
    appraisal = collateral.appraisals.order_by("-as_of", "-id").first()
    ltv = settings.LOAN_MAX_LTV
    minimum = settings.LOAN_MIN_PRINCIPAL
    min_dscr = settings.LOAN_MIN_DSCR
    if appraisal is None:
        zero = Decimal("0.00")
        return BorrowingLimit(
            None,
            tenor_months,
            kind,
            ltv,
            zero,
            zero,
            min_dscr,
            zero,
            zero,
            minimum,
            "appraisal",
            "",
            ("Not appraised yet.",),
        )
    ltv_maximum = (appraisal.value * ltv).quantize(money.CENT, rounding=ROUND_DOWN)
    income = monthly_income(appraisal)
    dscr_maximum = schedules.max_principal(
        (income / min_dscr).quantize(money.CENT, rounding=ROUND_DOWN), settings.LOAN_APR, tenor_months, kind
    )
    maximum = min(ltv_maximum, dscr_maximum)
    binding = "dscr" if dscr_maximum < ltv_maximum else "ltv"
    valuation = "income" if appraisal.income_value <= appraisal.depreciated_value else "depreciation"
    lower, higher = (
        ("income value", "depreciation value") if valuation == "income" else ("depreciation value", "income value")
    )
    reasons = [
        f"Depreciation value ${appraisal.depreciated_value:,}: the purchase price less "
        f"{appraisal.depreciation_rate:.0%} a year ({appraisal.depreciation_rate_source or 'rate'}) "
        f"for {appraisal.age_years:.2f} years.",
        _income_reason(appraisal),
        f"The appraisal (${appraisal.value:,}) is the lower of the two: the {lower} binds, below the {higher}.",
        f"LTV limit: {ltv:.0%} of ${appraisal.value:,} = ${ltv_maximum:,}.",
        f"DSCR limit: projected net income of ${income:,} a month covers the payments of at most "
        f"${dscr_maximum:,} over {tenor_months} months at {settings.LOAN_APR:.0%} APR (DSCR at least {min_dscr:.2f}).",
    ]
    reasons.append(
        f"The DSCR limit binds: ${maximum:,}, below the LTV limit."
        if binding == "dscr"
        else f"The LTV limit binds: ${maximum:,}."
    )
    if maximum < minimum:
        reasons.append(f"Below the ${minimum:,} minimum loan: nothing can be borrowed against it now.")
    return BorrowingLimit(
        appraisal,
        tenor_months,
        kind,
        ltv,
        ltv_maximum,
        income,
        min_dscr,
        dscr_maximum,
        maximum,
        minimum,
        binding,
        valuation,
        tuple(reasons),
    )


def loan_warnings(loan: Loan) -> list[str]:
    """What an owner and an operator should know about an application that was accepted."""
    if loan.projected_dscr is None or loan.projected_dscr >= settings.LOAN_WARN_DSCR:
        return []
    return [
        f"Projected DSCR {dscr_shown(loan.projected_dscr)} is below {settings.LOAN_WARN_DSCR:.2f}: the server's "
        f"projected net income of ${loan.projected_monthly_income:,} a month covers the "
        f"${loan.scheduled_payment:,} payment with little to spare; a weak month draws on the reserve "
        "and revenue is swept to repay early."
    ]


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
    allowance: Decimal = Decimal(0)  # the impairment: provision for the loan's expected loss
    claim: Decimal = Decimal(0)  # insurance claim receivable (lost hardware, booked at foreclosure)
    written_off: Decimal = Decimal(0)  # principal charged off, and any claim paid short of its receivable

    @property
    def net_value(self) -> Decimal:
        """What the loan is worth to the vault: principal and claim, less the allowance."""
        return self.outstanding + self.claim - self.allowance


_CHARGED_OFF = ("write_off", "claim_shortfall")


def loan_summary(loan: Loan, *, now: datetime | None = None) -> LoanSummary:
    now = now or timezone.now()
    codes = {kind: f"{kind}:{loan.pk}" for kind in ("principal", "interest", "reserve", "allowance", "claim")}
    rows = (
        Posting.objects.filter(account__code__in=codes.values())
        .values("account__code")
        .annotate(total=Sum("amount"), charged=Sum("amount", filter=Q(line__in=_CHARGED_OFF)))
    )
    sums = {row["account__code"]: money.usd(row["total"]) for row in rows}
    charged = {row["account__code"]: money.usd(row["charged"] or 0) for row in rows}
    outstanding = sums.get(codes["principal"], Decimal(0))
    appraisal = loan.collateral.appraisals.order_by("-as_of", "-id").first()
    upcoming = list(loan.instalments.filter(due__gt=now).order_by("number")[:3])
    debt_service = sum((i.payment for i in upcoming), Decimal(0))
    net = trailing_net_revenue(server=loan.collateral.server, until=now)
    return LoanSummary(
        loan=loan,
        outstanding=outstanding,
        interest_accrued=sums.get(codes["interest"], Decimal(0)),
        reserve=-sums.get(codes["reserve"], Decimal(0)),
        appraisal=appraisal,
        ltv=(outstanding / appraisal.value).quantize(Decimal("0.0001")) if appraisal and appraisal.value else None,
        dscr=(net / debt_service).quantize(Decimal("0.01")) if debt_service else None,
        next_instalment=upcoming[0] if upcoming else None,
        allowance=-sums.get(codes["allowance"], Decimal(0)),
        claim=sums.get(codes["claim"], Decimal(0)),
        written_off=-(charged.get(codes["principal"], Decimal(0)) + charged.get(codes["claim"], Decimal(0))),
    )


def loan_book() -> list[LoanSummary]:
    loans = Loan.objects.exclude(status__in=[Loan.Status.REJECTED]).select_related("owner", "collateral__server")
    return [loan_summary(loan) for loan in loans.order_by("-applied_at")]


@dataclass(frozen=True)
class LoanBookTotals:
    """The loan book in sum. The averages are weighted by outstanding principal, over the loans
    with principal outstanding (LTV over those with an appraisal); None when there are none."""

    principal: Decimal  # outstanding
    claims: Decimal
    allowance: Decimal
    net_value: Decimal  # principal + claims - allowance: what the vault counts in its NAV
    written_off: Decimal
    weighted_apr: Decimal | None
    weighted_ltv: Decimal | None


def loan_book_totals(summaries: list[LoanSummary]) -> LoanBookTotals:
    def total(values) -> Decimal:
        return sum(values, Decimal(0))

    live = [s for s in summaries if s.outstanding > 0]
    appraised = [s for s in live if s.appraisal and s.appraisal.value > 0]
    weight, ltv_weight = total(s.outstanding for s in live), total(s.outstanding for s in appraised)
    apr = total(s.outstanding * s.loan.apr for s in live) / weight if weight else None
    # Each loan's LTV is its outstanding principal over its appraisal, unrounded.
    ltv_sum = total(s.outstanding * s.outstanding / s.appraisal.value for s in appraised)
    ltv = ltv_sum / ltv_weight if ltv_weight else None
    return LoanBookTotals(
        principal=total(s.outstanding for s in summaries),
        claims=total(s.claim for s in summaries),
        allowance=total(s.allowance for s in summaries),
        net_value=total(s.net_value for s in summaries),
        written_off=total(s.written_off for s in summaries),
        weighted_apr=apr.quantize(Decimal("0.0001")) if apr is not None else None,
        weighted_ltv=ltv.quantize(Decimal("0.0001")) if ltv is not None else None,
    )


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


# --- A loan's losses, first-loss capital and reserve; the owner's revenue ----------------------


@dataclass(frozen=True)
class FirstLossPosition:
    provider_id: int
    provider: str  # "the owner (<company>)" or "curator #<user id>": lenders do not see each other's e-mail
    amount: Decimal
    premium_share: Decimal  # of the loan's interest net of the protocol fee
    status: str
    absorbed: Decimal  # losses it paid
    returned: Decimal  # capital and premium paid back
    posted_at: datetime
    closed_at: datetime | None


@dataclass(frozen=True)
class FirstLossBook:
    positions: tuple[FirstLossPosition, ...]
    posted: Decimal  # every position's amount
    standing: Decimal  # capital still ahead of lenders (the credit balance of first_loss:<loan>)
    premium_owed: Decimal  # premium earned, paid when the loan ends (premium:<loan>)


def loan_first_loss(loan: Loan) -> FirstLossBook:
    """First-loss capital posted on the loan, newest first, and what of it stands."""
    owners = set(loan.owner.memberships.values_list("user_id", flat=True))
    rows = FirstLoss.objects.filter(loan=loan).order_by("-posted_at", "-pk")
    positions = tuple(
        FirstLossPosition(
            provider_id=row.provider_id,
            provider=f"the owner ({loan.owner.name})" if row.provider_id in owners else f"curator #{row.provider_id}",
            amount=row.amount,
            premium_share=row.premium_share,
            status=row.get_status_display(),
            absorbed=row.absorbed,
            returned=row.returned,
            posted_at=row.posted_at,
            closed_at=row.closed_at,
        )
        for row in rows
    )
    balances = _balances(loan, ("first_loss", "premium"))
    return FirstLossBook(
        positions=positions,
        posted=sum((p.amount for p in positions), Decimal(0)),
        standing=-balances["first_loss"],
        premium_owed=-balances["premium"],
    )


@dataclass(frozen=True)
class Claim:
    pk: int
    declared_at: datetime
    description: str
    insurer: str
    policy_number: str
    amount_claimed: Decimal
    status: str  # InsuranceClaim.Status
    status_display: str
    amount_paid: Decimal | None
    settled_at: datetime | None

    @property
    def is_open(self) -> bool:
        return self.status == InsuranceClaim.Status.OPEN


def loan_claims(loan: Loan) -> list[Claim]:
    """Insurance claims on the loan's collateral, newest first."""
    return [
        Claim(
            pk=c.pk,
            declared_at=c.declared_at,
            description=c.description,
            insurer=c.insurer,
            policy_number=c.policy_number,
            amount_claimed=c.amount_claimed,
            status=c.status,
            status_display=c.get_status_display(),
            amount_paid=c.amount_paid,
            settled_at=c.settled_at,
        )
        for c in InsuranceClaim.objects.filter(collateral_id=loan.collateral_id).order_by("-declared_at", "-pk")
    ]


@dataclass(frozen=True)
class ReserveHistory:
    """The loan's debt-service reserve (``reserve:<loan>``), line by line:
    ``held = funded + topped_up − drawn − applied − released``."""

    funded: Decimal  # held back from the proceeds at origination
    topped_up: Decimal  # refilled from revenue by the waterfall
    drawn: Decimal  # paid debt service that revenue did not cover
    applied: Decimal  # paid principal down at foreclosure
    released: Decimal  # paid back to the owner when the loan was repaid
    released_at: datetime | None
    held: Decimal


def loan_reserve(loan: Loan) -> ReserveHistory:
    by_line = dict(
        Posting.objects.filter(account__code=f"reserve:{loan.pk}")
        .values("line")
        .annotate(total=Sum("amount"))
        .values_list("line", "total")
    )

    def line(name: str) -> Decimal:
        return money.usd(abs(by_line.get(name) or 0))

    return ReserveHistory(
        funded=line("reserve_funding"),
        topped_up=line("reserve"),
        drawn=line("reserve_draw"),
        applied=line("reserve_applied"),
        released=line("reserve_release"),
        released_at=loan.reserve_released_at,
        held=money.usd(-sum((Decimal(v) for v in by_line.values()), Decimal(0))),
    )


@dataclass(frozen=True)
class OwnerRevenue:
    """What the server's renters paid and what the waterfall left its owner (the loan's
    borrower), over the settlements the loan page's charts show."""

    gross: Decimal
    to_owner: Decimal  # the owner's line of each settlement, after fee, insurance, reserve and debt service
    reserve_released: Decimal  # paid to the owner from the reserve when the loan was repaid

    @property
    def waterfall_took(self) -> Decimal:
        return self.gross - self.to_owner

    @property
    def owner_percent(self) -> Decimal | None:
        return (self.to_owner / self.gross * 100).quantize(Decimal("0.01")) if self.gross else None


def owner_revenue(loan: Loan) -> OwnerRevenue:
    settlements = Posting.objects.filter(entry__settlement__server_id=loan.collateral.server_id)
    gross = money.sum_of(settlements.filter(line="gross"))
    to_owner = -money.sum_of(settlements.filter(line="owner", account__code=owner_payable_code(loan.owner_id)))
    return OwnerRevenue(
        gross=money.usd(gross), to_owner=money.usd(to_owner), reserve_released=loan_reserve(loan).released
    )


def _balances(loan: Loan, kinds: tuple[str, ...]) -> dict[str, Decimal]:
    codes = {f"{kind}:{loan.pk}": kind for kind in kinds}
    sums = dict(
        Posting.objects.filter(account__code__in=codes)
        .values("account__code")
        .annotate(total=Sum("amount"))
        .values_list("account__code", "total")
    )
    return {kind: money.usd(sums.get(code) or 0) for code, kind in codes.items()}
