"""Payouts and owner statements, read from the ledger (frozen dataclasses).

A statement covers one payout run's period ``[period_start, period_end)`` for one company:
per server, what the waterfall did with its revenue in the entries journaled in the period
(gross rent, platform fee, insurance, debt service = interest + principal, reserve held),
what reached the owner from it, and reserve released and insurance claims paid to the owner.
Per line: gross − fee − insurance − debt service − reserve held = to owner, and to owner +
released + claims = net; the nets sum to the credits of the company's payable in the period
exactly (they are those postings). Then opening (owed at the start) + earned − paid in the
run = closing (carried forward).
"""

from collections import defaultdict
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal

from django.db.models import Q

from accounts.models import OwnerCompany
from core import money
from financing.chart_of_accounts import owner_payable_code
from financing.models import Loan, Payout, PayoutRun, Posting, SepaFile
from marketplace.models import Server

_PAYOUT_KEYS = "payout:"
ZERO = money.usd(0)


@dataclass(frozen=True)
class StatementLine:
    server_id: int | None
    server: str
    gross: Decimal = ZERO
    platform_fee: Decimal = ZERO
    insurance: Decimal = ZERO
    debt_service: Decimal = ZERO
    reserve_held: Decimal = ZERO
    owner: Decimal = ZERO
    reserve_released: Decimal = ZERO
    claims: Decimal = ZERO
    net: Decimal = ZERO


AMOUNT_FIELDS = tuple(f.name for f in fields(StatementLine) if f.name not in ("server_id", "server"))


@dataclass(frozen=True)
class PayoutRow:
    id: int
    run_id: int
    company: str
    period_start: datetime
    period_end: datetime
    amount: Decimal
    rail: str
    rail_label: str
    status: str
    status_label: str
    reason: str
    amount_eur: Decimal | None
    usd_eur_rate: Decimal | None
    address: str
    chain_status: str
    tx_hash: str
    end_to_end_id: str
    sepa_file_id: int | None
    created_at: datetime


@dataclass(frozen=True)
class Statement:
    company: str
    run_id: int
    period_start: datetime
    period_end: datetime
    lines: tuple[StatementLine, ...]
    total: StatementLine
    opening: Decimal
    earned: Decimal
    paid: Decimal
    closing: Decimal
    payout: PayoutRow | None


@dataclass(frozen=True)
class SepaFileRow:
    id: int
    run_id: int
    message_id: str
    lines: int
    total_eur: Decimal
    total_usd: Decimal
    built: bool
    created_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True)
class RunRow:
    id: int
    period_start: datetime
    period_end: datetime
    trigger: str
    status: str
    created_by: str
    created_at: datetime
    paid: int
    paid_total: Decimal
    withheld: int
    failed: int
    carried: int


def _row(payout: Payout) -> PayoutRow:
    op = payout.op
    return PayoutRow(
        id=payout.pk,
        run_id=payout.run_id,
        company=payout.company.name,
        period_start=payout.run.period_start,
        period_end=payout.run.period_end,
        amount=payout.amount,
        rail=payout.rail,
        rail_label=payout.get_rail_display(),
        status=payout.status,
        status_label=payout.get_status_display(),
        reason=payout.reason,
        amount_eur=payout.amount_eur,
        usd_eur_rate=payout.usd_eur_rate,
        address=payout.address,
        chain_status=op.get_status_display() if op else "",
        tx_hash=op.tx_hash if op else "",
        end_to_end_id=payout.end_to_end_id,
        sepa_file_id=payout.sepa_file_id,
        created_at=payout.created_at,
    )


def _payouts():
    return Payout.objects.select_related("run", "company", "op")


def company_payouts(company: OwnerCompany) -> list[PayoutRow]:
    return [_row(p) for p in _payouts().filter(company=company).order_by("-run__period_end", "-pk")]


def company_runs(company: OwnerCompany) -> list[PayoutRun]:
    """The runs a company has a statement for: every run since its first earnings."""
    first = (
        Posting.objects.filter(account__code=owner_payable_code(company.pk))
        .order_by("entry__created_at")
        .values_list("entry__created_at", flat=True)
        .first()
    )
    if first is None:
        return []
    return list(PayoutRun.objects.filter(period_end__gt=first).order_by("-period_end", "-pk"))


def _servers_of_loans(codes: set[str]) -> dict[str, int]:
    """Loan account code (``reserve:<pk>``, ``claim:<pk>``) → its loan's server."""
    loan_ids = {int(code.split(":", 1)[1]) for code in codes}
    servers = dict(Loan.objects.filter(pk__in=loan_ids).values_list("pk", "collateral__server_id"))
    return {code: servers.get(int(code.split(":", 1)[1])) for code in codes}


def payout_statement(*, company: OwnerCompany, run: PayoutRun) -> Statement:
    payable = owner_payable_code(company.pk)
    in_period = Q(entry__created_at__gte=run.period_start, entry__created_at__lt=run.period_end)
    entry_ids = set(
        Posting.objects.filter(in_period, account__code=payable)
        .exclude(entry__key__startswith=_PAYOUT_KEYS)
        .values_list("entry_id", flat=True)
    ) | set(
        Posting.objects.filter(in_period, entry__settlement__server__owner=company).values_list("entry_id", flat=True)
    )
    rows = list(
        Posting.objects.filter(entry_id__in=entry_ids).values_list(
            "entry_id", "entry__settlement__server_id", "account__code", "line", "amount"
        )
    )
    loan_codes = {code for _, _, code, _, _ in rows if code.startswith(("reserve:", "claim:"))}
    loan_servers = _servers_of_loans(loan_codes)
    entry_server: dict[int, int | None] = {}
    for entry_id, server_id, code, _, _ in rows:
        if server_id is not None:
            entry_server[entry_id] = server_id
        elif code in loan_servers:
            entry_server.setdefault(entry_id, loan_servers[code])
    sums: dict[int | None, dict[str, Decimal]] = defaultdict(lambda: dict.fromkeys(AMOUNT_FIELDS, Decimal(0)))
    for entry_id, _, code, line, amount in rows:
        totals = sums[entry_server.get(entry_id)]
        if line == "gross":
            totals["gross"] += amount
        elif line == "platform_fee" and code == "platform_revenue":
            totals["platform_fee"] -= amount
        elif line == "insurance":
            totals["insurance"] -= amount
        elif line in ("interest", "principal") and code.startswith(("interest:", "principal:")):
            totals["debt_service"] -= amount
        elif line == "reserve" and code.startswith("reserve:"):
            totals["reserve_held"] -= amount
        if code == payable:
            purpose = {"owner": "owner", "reserve_release": "reserve_released", "claim_paid": "claims"}.get(line)
            if purpose:
                totals[purpose] -= amount
            totals["net"] -= amount
    names = dict(Server.objects.filter(pk__in=[pk for pk in sums if pk]).values_list("pk", "hostname"))
    lines = tuple(
        StatementLine(server_id=pk, server=names.get(pk, "Other"), **{k: money.usd(v) for k, v in amounts.items()})
        for pk, amounts in sorted(sums.items(), key=lambda item: (names.get(item[0]) or "~", item[0] or 0))
    )
    total = StatementLine(
        server_id=None,
        server="Total",
        **{name: sum((getattr(line, name) for line in lines), ZERO) for name in AMOUNT_FIELDS},
    )
    postings = Posting.objects.filter(account__code=payable).exclude(entry__key__startswith=_PAYOUT_KEYS)
    earned_before = -money.usd(money.sum_of(postings.filter(entry__created_at__lt=run.period_start)))
    paid_before = money.sum_of(
        Payout.objects.filter(company=company, status__in=Payout.PAID, run__period_end__lte=run.period_start)
    )
    payout = _payouts().filter(company=company, run=run).first()
    paid = money.usd(payout.amount) if payout and payout.status in Payout.PAID else ZERO
    opening = money.usd(earned_before - paid_before)
    return Statement(
        company=company.name,
        run_id=run.pk,
        period_start=run.period_start,
        period_end=run.period_end,
        lines=lines,
        total=total,
        opening=opening,
        earned=total.net,
        paid=paid,
        closing=opening + total.net - paid,
        payout=_row(payout) if payout else None,
    )


def payout_runs(*, limit: int = 20) -> list[RunRow]:
    runs = list(PayoutRun.objects.select_related("created_by").order_by("-period_end", "-pk")[:limit])
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    totals: dict[int, Decimal] = defaultdict(Decimal)
    for run_id, status, amount in Payout.objects.filter(run__in=runs).values_list("run_id", "status", "amount"):
        counts[run_id][status] += 1
        if status in Payout.PAID:
            totals[run_id] += amount
    return [
        RunRow(
            id=run.pk,
            period_start=run.period_start,
            period_end=run.period_end,
            trigger=run.get_trigger_display(),
            status=run.get_status_display(),
            created_by=str(run.created_by or "the weekly schedule"),
            created_at=run.created_at,
            paid=counts[run.pk]["sent"] + counts[run.pk]["confirmed"],
            paid_total=money.usd(totals[run.pk]),
            withheld=counts[run.pk]["withheld"],
            failed=counts[run.pk]["failed"],
            carried=counts[run.pk]["carried"],
        )
        for run in runs
    ]


def run_payouts(run: PayoutRun) -> list[PayoutRow]:
    return [_row(p) for p in _payouts().filter(run=run).order_by("company__name", "pk")]


def sepa_files(*, limit: int = 20) -> list[SepaFileRow]:
    return [
        SepaFileRow(
            id=f.pk,
            run_id=f.run_id,
            message_id=f.message_id,
            lines=f.payouts.count(),
            total_eur=f.total_eur,
            total_usd=f.total_usd,
            built=bool(f.xml),
            created_at=f.created_at,
            sent_at=f.sent_at,
        )
        for f in SepaFile.objects.order_by("-created_at", "-pk")[:limit]
    ]
