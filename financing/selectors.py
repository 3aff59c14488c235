"""Financing reads for lender and owner pages, and ledger balances."""

from decimal import Decimal

from django.db.models import Sum

from accounts.models import User
from accounts.selectors import lender_profile_for_user, user_has_mfa
from financing.models import LedgerAccount, Posting
from marketplace import money


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
    return money.usd(postings.aggregate(total=Sum("amount"))["total"] or 0)


def balances() -> dict[str, Decimal]:
    rows = Posting.objects.values("account__code").annotate(total=Sum("amount")).order_by("account__code")
    return {row["account__code"]: money.usd(row["total"]) for row in rows}
