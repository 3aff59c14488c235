"""Ledger balances: sums of postings, never stored."""

from decimal import Decimal

from django.db.models import Sum

from core import money
from financing.chart_of_accounts import usdai_code
from financing.models import LedgerAccount, Posting


def account_balance(account: LedgerAccount | str) -> Decimal:
    """Debits minus credits, derived from the postings (never stored). Quantized
    to the micro-dollar: exact on PostgreSQL, and it absorbs SQLite's float sums."""
    postings = Posting.objects.filter(account__code=account) if isinstance(account, str) else account.postings
    return money.usd(money.sum_of(postings))


def balances() -> dict[str, Decimal]:
    rows = Posting.objects.values("account__code").annotate(total=Sum("amount")).order_by("account__code")
    return {row["account__code"]: money.usd(row["total"]) for row in rows}


def codes_balance(**code_filter) -> Decimal:
    """The balance of every account matching ``code_filter`` (e.g. ``code__startswith="principal:"``)."""
    return money.usd(money.sum_of(Posting.objects.filter(**{f"account__{k}": v for k, v in code_filter.items()})))


def usdai_balance_of(account: LedgerAccount) -> Decimal:
    """USDai held in a ``usdai:<user>`` account: a liability, so its credit balance, shown positive."""
    return -account_balance(account)


def usdai_balance(*, user) -> Decimal:
    account = LedgerAccount.objects.filter(code=usdai_code(user.pk)).first()
    return usdai_balance_of(account) if account else money.usd(0)
