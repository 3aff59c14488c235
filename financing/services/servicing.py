"""Loan servicing: interest accrual and what a loan needs from revenue.

Interest accrues per second, simple, on outstanding principal:
``principal × APR × seconds / (365 × 86,400)``, rounded half-up to the
micro-dollar and posted (Dr the loan's interest receivable, Cr interest
income) up to the moment revenue is applied. What the loan needs then:

- reserve: ``LOAN_RESERVE_MONTHS`` (3) of the next scheduled payments (never
  more than was held back at origination), less what the reserve holds;
- interest: everything accrued and unpaid;
- principal: the scheduled principal of every instalment due up to and
  including the next one, less principal already repaid (revenue during the
  month pays the coming instalment down as it arrives);
- DSCR: trailing 90-day net revenue over the next 3 scheduled payments.

``LoanBook`` loads the state of the loans a batch of settlements touches in a
few queries and keeps it current in memory while the batch is applied, so a
batch of any size costs the same handful of queries; one settlement is a
batch of one.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db.models import Q, Sum

from core.money import MICRO
from financing import lock_objects, waterfall
from financing.models import FirstLoss, Instalment, Loan, Posting
from financing.selectors.loans import TRAILING_DAYS
from financing.services.ledger import LOAN_ACCOUNT_KINDS, Accounts, Line
from marketplace.models import Settlement

SECONDS_PER_YEAR = Decimal(365 * 24 * 3600)
LIVE = (Loan.Status.ACTIVE, Loan.Status.DEFAULTED, Loan.Status.FORECLOSED)


@dataclass
class _State:
    loan: Loan
    principal: Decimal  # outstanding (debit balance of principal:<id>)
    interest: Decimal  # accrued, unpaid
    reserve: Decimal  # held (the credit balance of reserve:<id>, as a positive amount)
    allowance: Decimal = Decimal(0)  # for expected loss (credit balance, positive)
    claim: Decimal = Decimal(0)  # insurance claim receivable
    first_loss: Decimal = Decimal(0)  # first-loss capital still standing (credit balance, positive)
    premium: Decimal = Decimal(0)  # premium owed to first-loss providers (credit balance, positive)
    premium_share: Decimal = Decimal(0)  # of the interest net of the protocol fee
    instalments: list[Instalment] = field(default_factory=list)


def live_loans_for_servers(server_ids) -> dict[int, Loan]:
    loans = lock_objects.loans_lock(
        Loan.objects.filter(collateral__server_id__in=set(server_ids), status__in=LIVE).select_related(
            "collateral", "owner"
        )
    )
    return {loan.collateral.server_id: loan for loan in loans}


class LoanBook:
    def __init__(self, loans: list[Loan], *, window_end: datetime, window_start: datetime, accounts: Accounts):
        self.accounts = accounts
        self.states: dict[int, _State] = {}
        codes = {f"{p}:{loan.pk}": (loan.pk, p) for loan in loans for p in LOAN_ACCOUNT_KINDS}
        accounts.preload(codes)
        sums = dict(
            Posting.objects.filter(account__code__in=codes)
            .values("account__code")
            .annotate(total=Sum("amount"))
            .values_list("account__code", "total")
        )

        def bal(loan, purpose):
            return Decimal(sums.get(f"{purpose}:{loan.pk}") or 0).quantize(MICRO)

        for loan in loans:
            self.states[loan.pk] = _State(
                loan,
                principal=bal(loan, "principal"),
                interest=bal(loan, "interest"),
                reserve=-bal(loan, "reserve"),
                allowance=-bal(loan, "allowance"),
                claim=bal(loan, "claim"),
                first_loss=-bal(loan, "first_loss"),
                premium=-bal(loan, "premium"),
            )
        for loan_id, share in (
            FirstLoss.objects.filter(loan_id__in=self.states, status=FirstLoss.Status.POSTED)
            .values("loan_id")
            .annotate(share=Sum("premium_share"))
            .values_list("loan_id", "share")
        ):
            self.states[loan_id].premium_share = min(Decimal(share), Decimal(1))
        for inst in Instalment.objects.filter(loan_id__in=self.states).order_by("loan_id", "number"):
            self.states[inst.loan_id].instalments.append(inst)
        # Trailing 90-day revenue at any moment `at` of the batch [window_start, window_end]:
        # one summed number per server for the part of the window every `at` shares,
        # (window_end − 90 d, window_start], plus the individual rows at its two moving
        # edges: (window_start − 90 d, window_end − 90 d] and (window_start, window_end].
        trailing = timedelta(days=TRAILING_DAYS)
        server_ids = [loan.collateral.server_id for loan in loans]
        self._base = dict(
            Settlement.objects.filter(
                server_id__in=server_ids, interval_end__gt=window_end - trailing, interval_end__lte=window_start
            )
            .values("server_id")
            .annotate(total=Sum("gross_amount"))
            .values_list("server_id", "total")
        )
        self._edges: dict[int, list[tuple[datetime, Decimal]]] = defaultdict(list)
        for server_id, end, gross in (
            Settlement.objects.filter(server_id__in=server_ids)
            .filter(
                Q(interval_end__gt=window_start - trailing, interval_end__lte=window_end - trailing)
                | Q(interval_end__gt=window_start, interval_end__lte=window_end)
            )
            .values_list("server_id", "interval_end", "gross_amount")
        ):
            if not (window_end - trailing < end <= window_start):  # the two edges may overlap the middle
                self._edges[server_id].append((end, gross))

    def _trailing_net(self, server_id: int, at: datetime) -> Decimal:
        since = at - timedelta(days=TRAILING_DAYS)
        gross = Decimal(self._base.get(server_id) or 0) + sum(
            (g for end, g in self._edges.get(server_id, ()) if since < end <= at), Decimal(0)
        )
        return gross * (1 - settings.WATERFALL_PLATFORM_FEE)

    def accrue(self, loan: Loan, until: datetime) -> list[Line]:
        """Interest from the loan's last accrual to ``until``: the accrual entry's lines (maybe none)."""
        state = self.states[loan.pk]
        start = loan.interest_accrued_to
        if start is None or until <= start:
            return []
        if loan.status != Loan.Status.ACTIVE:
            # Non-accrual: a loan in default earns nothing more on the books; what it pays is
            # cash (principal first), not income counted before it arrives.
            loan.interest_accrued_to = until
            return []
        seconds = Decimal((until - start).total_seconds())
        amount = (state.principal * loan.apr * seconds / SECONDS_PER_YEAR).quantize(MICRO, rounding=ROUND_HALF_UP)
        # Grace-rate interest on principal overdue beyond the grace period, for the
        # part of the interval after the grace period ended (at the overdue amount
        # as of ``until``: servicing runs at least daily, so that amount is current).
        overdue, since = self.overdue(loan, until)
        if overdue > 0:
            grace_end = since + timedelta(days=settings.LOAN_GRACE_DAYS)
            late_seconds = Decimal(max((until - max(start, grace_end)).total_seconds(), 0))
            amount += (overdue * settings.LOAN_GRACE_APR * late_seconds / SECONDS_PER_YEAR).quantize(
                MICRO, rounding=ROUND_HALF_UP
            )
        loan.interest_accrued_to = until
        if amount <= 0:
            return []
        state.interest += amount
        return [
            Line(self.accounts.loan(loan, "interest"), amount, "accrual"),
            Line(self.accounts.system("interest_income"), -amount, "accrual"),
        ]

    def overdue(self, loan: Loan, at: datetime) -> tuple[Decimal, datetime | None]:
        """Principal scheduled by instalments due at ``at`` and not yet repaid, and
        the due date of the earliest instalment it belongs to."""
        state = self.states[loan.pk]
        repaid = loan.principal - state.principal
        cumulative, since = Decimal(0), None
        for inst in state.instalments:
            if inst.due > at:
                break
            cumulative += inst.principal
            if since is None and cumulative > repaid:
                since = inst.due
        return max(cumulative - repaid, Decimal(0)), since

    def days_past_due(self, loan: Loan, at: datetime) -> int:
        _, since = self.overdue(loan, at)
        return (at - since).days if since else 0

    def draw_reserve(self, loan: Loan, at: datetime) -> list[Line]:
        """After the grace period, the reserve pays overdue interest, then overdue principal."""
        state = self.states[loan.pk]
        overdue, since = self.overdue(loan, at)
        if since is None or at < since + timedelta(days=settings.LOAN_GRACE_DAYS) or state.reserve <= 0:
            return []
        interest = min(state.reserve, max(state.interest, Decimal(0)))
        principal = min(state.reserve - interest, overdue)
        if interest + principal <= 0:
            return []
        parts = dict.fromkeys(waterfall.LINES, Decimal(0)) | {"interest": interest, "principal": principal}
        lines = [Line(self.accounts.loan(loan, "reserve"), interest + principal, "reserve_draw")]
        state.reserve -= interest + principal
        return lines + self.apply(loan, parts)[1:]  # apply()'s first line is the reserve top-up (zero here)

    def release_reserve(self, loan: Loan) -> list[Line]:
        """A repaid loan's reserve goes back to its owner (what it still holds)."""
        state = self.states[loan.pk]
        if state.reserve <= 0:
            return []
        amount, state.reserve = state.reserve, Decimal(0)
        return [
            Line(self.accounts.loan(loan, "reserve"), amount, "reserve_release"),
            Line(self.accounts.owner_payable(loan.owner_id, loan.owner.name), -amount, "reserve_release"),
        ]

    def needs(self, loan: Loan, at: datetime) -> waterfall.LoanNeeds:
        state = self.states[loan.pk]
        upcoming = [i for i in state.instalments if i.due > at]
        payments = [i.payment for i in upcoming[:3]] or [i.payment for i in state.instalments[-1:]]
        last_number = upcoming[0].number if upcoming else loan.tenor_months
        scheduled = sum((i.principal for i in state.instalments if i.number <= last_number), Decimal(0))
        repaid = loan.principal - state.principal
        reserve_target = min(sum(payments[: settings.LOAN_RESERVE_MONTHS], Decimal(0)), loan.reserve_funded)
        debt_service = sum(payments[:3], Decimal(0))
        net = self._trailing_net(loan.collateral.server_id, at)
        return waterfall.LoanNeeds(
            reserve_shortfall=max(reserve_target - state.reserve, Decimal(0)),
            interest_due=max(state.interest, Decimal(0)),
            principal_due=max(scheduled - repaid, Decimal(0)),
            outstanding_principal=state.principal,
            dscr=(net / debt_service).quantize(Decimal("0.0001")) if debt_service else None,
            foreclosed=loan.status == Loan.Status.FORECLOSED,
        )

    def apply(self, loan: Loan, parts: dict[str, Decimal]) -> list[Line]:
        """The loan's side of a settlement entry: reserve, interest and principal
        collected, the cash moved to the vault, the protocol's share of interest."""
        state = self.states[loan.pk]
        interest, principal = parts["interest"], parts["principal"] + parts["sweep"]
        state.reserve += parts["reserve"]
        state.interest -= interest
        state.principal -= principal
        protocol = (interest * settings.LOAN_PROTOCOL_FEE).quantize(MICRO, rounding=ROUND_HALF_UP)
        premium = ((interest - protocol) * state.premium_share).quantize(MICRO, rounding=ROUND_HALF_UP)
        state.premium += premium
        system = self.accounts.system
        # The vault gets the principal and the interest net of the protocol's fee and of the
        # first-loss premium (their cash stays with the platform); each epoch reports both on chain.
        return [
            Line(self.accounts.loan(loan, "reserve"), -parts["reserve"], "reserve"),
            Line(self.accounts.loan(loan, "interest"), -interest, "interest"),
            Line(self.accounts.loan(loan, "principal"), -principal, "principal"),
            Line(system("vault_cash"), principal, "to_vault_principal"),
            Line(system("vault_cash"), interest - protocol - premium, "to_vault_interest"),
            Line(system("gateway_clearing"), -(principal + interest - protocol - premium), "to_vault"),
            Line(system("interest_income"), protocol + premium, "protocol_fee"),
            Line(system("protocol_fee"), -protocol, "protocol_fee"),
            Line(self.accounts.loan(loan, "premium"), -premium, "first_loss_premium"),
        ]

    def save(self) -> None:
        loans = [state.loan for state in self.states.values()]
        Loan.objects.bulk_update(loans, ["interest_accrued_to"])
