"""Financing reads for lender and owner pages, and ledger balances."""

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Count, Sum
from django.utils import timezone

from accounts.models import User
from accounts.selectors import lender_profile_for_user, user_has_mfa
from core import money
from financing import merkle
from financing.chain.client import ChainError
from financing.models import (
    Appraisal,
    ChainAlert,
    ChainOp,
    Collateral,
    JournalEntry,
    LedgerAccount,
    Loan,
    Posting,
    Reconciliation,
    Redemption,
    RevenueEpoch,
    UsdaiPurchase,
    Wallet,
)


def lender_overview(*, user: User) -> dict:
    """What the lender dashboard shows about the lender's own account."""
    profile = lender_profile_for_user(user)
    return {
        "wallet_address": profile.wallet_address if profile else "",
        "mfa_enabled": user_has_mfa(user),
    }


def account_balance(account: LedgerAccount | str) -> Decimal:
    """Debits minus credits, derived from the postings (never stored). Quantized
    to the micro-dollar: exact on PostgreSQL, and it absorbs SQLite's float sums."""
    postings = Posting.objects.filter(account__code=account) if isinstance(account, str) else account.postings
    return money.usd(money.sum_of(postings, "amount"))


def balances() -> dict[str, Decimal]:
    rows = Posting.objects.values("account__code").annotate(total=Sum("amount")).order_by("account__code")
    return {row["account__code"]: money.usd(row["total"]) for row in rows}


# --- Loans for owner and lender pages ------------------------------------------------


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
    from financing.services.collateral import trailing_net_revenue

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


def placement_weights(server_ids, *, now: datetime | None = None) -> dict[int, float]:
    """How much each financed server's loan needs revenue, for collateral-aware placement.

    0 for a server whose loan covers its debt service at the target DSCR or
    better, rising to 1 as coverage falls to nothing; servers without a live
    loan are absent. The scheduler passes this plain mapping to its placement
    engine, which knows nothing of loans.
    """
    target = settings.WATERFALL_DSCR_TARGET
    loans = Loan.objects.filter(
        collateral__server_id__in=set(server_ids),
        status__in=[Loan.Status.ACTIVE, Loan.Status.DEFAULTED, Loan.Status.FORECLOSED],
    ).select_related("collateral__server")
    weights = {}
    for loan in loans:
        dscr = loan_summary(loan, now=now).dscr
        need = Decimal(1) if dscr is None else max(Decimal(0), (target - dscr) / target)
        weights[loan.collateral.server_id] = float(min(need, Decimal(1)))
    return weights


# --- Wallets, the vault, proof of revenue, the outbox ---------------------------------


def wallet_address(*, user: User) -> str:
    """The user's custodial address, or "" before their first USDai (a page never creates one)."""
    return Wallet.objects.filter(user=user).values_list("address", flat=True).first() or ""


def usdai_purchases(*, user: User, limit: int = 10) -> list[UsdaiPurchase]:
    return list(UsdaiPurchase.objects.filter(user=user).order_by("-created_at", "-pk")[:limit])


def user_redemptions(*, user: User) -> list[tuple[Redemption, dict | None]]:
    """The user's redemptions, newest first, each with its queue position and estimate while unpaid."""
    from financing.services.vault import redemption_estimate

    rows = Redemption.objects.filter(user=user).order_by("-created_at", "-pk")
    return [(r, None if r.status == Redemption.Status.PAID else redemption_estimate(redemption=r)) for r in rows]


def revenue_epochs(*, limit: int = 100) -> list[RevenueEpoch]:
    return list(RevenueEpoch.objects.select_related("anchor_op").order_by("-number")[:limit])


def anchored_root(*, epoch_number: int) -> dict:
    """The root ``RevenueAnchor`` holds for an epoch: {"root": "0x…" or None (not anchored)}
    or {"root": None, "error": …} when the chain cannot be asked."""
    from financing.services.outbox import get_chain

    try:
        raw = get_chain().call("RevenueAnchor", "roots", epoch_number)
    except ChainError as exc:
        return {"root": None, "error": f"The chain is not reachable: {exc}"}
    root = "0x" + bytes(raw).hex()
    return {"root": None if int(root, 16) == 0 else root}


def settlement_proof_check(*, settlement_id: int) -> dict | None:
    """A settlement's proof of revenue, checked here: the leaf recomputed from its record,
    the proof followed to a root, and that root compared with the one anchored on chain.

    None when the settlement is in no epoch yet."""
    from financing.services.epochs import settlement_proof

    proof = settlement_proof(settlement_id=settlement_id)
    if proof is None:
        return None
    leaf = merkle.leaf_hash(proof["data"].encode())
    node = leaf
    for sibling in proof["proof"]:
        node = merkle.node_hash(node, bytes.fromhex(sibling[2:]))
    computed = "0x" + node.hex()
    chain = anchored_root(epoch_number=proof["epoch"].number)
    return proof | {
        "record": json.loads(proof["data"]),
        "leaf_ok": "0x" + leaf.hex() == proof["leaf"],
        "computed_root": computed,
        "anchored_root": chain["root"],
        "chain_error": chain.get("error", ""),
        "matches": chain["root"] is not None and computed == chain["root"] == proof["root"],
    }


def chain_operations() -> dict:
    """What the operator's chain page shows: the outbox by status, the oldest row
    still open, failed rows, open alerts, the latest reconciliation."""
    counts = dict(ChainOp.objects.values("status").annotate(n=Count("pk")).values_list("status", "n"))
    return {
        "counts": [(label, counts.get(value, 0)) for value, label in ChainOp.Status.choices],
        "oldest_open": ChainOp.objects.filter(status__in=[ChainOp.Status.PENDING, ChainOp.Status.SIGNED])
        .order_by("pk")
        .first(),
        "failed": list(ChainOp.objects.filter(status=ChainOp.Status.FAILED).order_by("-pk")[:50]),
        "retried": {
            key.rsplit(":retry", 1)[0]
            for key in ChainOp.objects.filter(key__contains=":retry").values_list("key", flat=True)
        },
        "alerts": list(
            ChainAlert.objects.filter(resolved_at__isnull=True).select_related("op").order_by("-created_at")
        ),
        "reconciliation": Reconciliation.objects.order_by("-ran_at").first(),
    }
