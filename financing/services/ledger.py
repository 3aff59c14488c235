"""Posting to the double-entry ledger.

``journal_post`` is the only way money moves in the books: it refuses an
entry that does not balance (the database refuses it too, on PostgreSQL, at
commit), and it is idempotent by key: posting the same key again returns the
entry already there and writes nothing.
"""

from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import NamedTuple

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from core import money
from financing.chart_of_accounts import SYSTEM_ACCOUNTS, owner_payable_code
from financing.models import JournalEntry, LedgerAccount, Loan, Posting

_SYSTEM = {code: (name, kind) for code, name, kind in SYSTEM_ACCOUNTS}


class Line(NamedTuple):
    account: LedgerAccount
    amount: Decimal  # debit positive, credit negative
    line: str = ""
    currency: str = "USD"


def system_account(code: str) -> LedgerAccount:
    name, kind = _SYSTEM[code]
    account, _ = LedgerAccount.objects.get_or_create(code=code, defaults={"name": name, "kind": kind})
    return account


# Per-loan accounts: what the borrower owes (principal, interest), the debt-service
# reserve held for the loan, the allowance for its expected loss (a contra-asset: a
# credit balance), an insurance claim receivable on its hardware, the first-loss capital
# posted on it and the premium that capital has earned.
LOAN_ACCOUNT_KINDS = {
    "principal": "asset",
    "interest": "asset",
    "reserve": "liability",
    "allowance": "asset",
    "claim": "asset",
    "first_loss": "liability",
    "premium": "liability",
}


class Accounts:
    """Ledger accounts by code, created on first use and cached for the batch."""

    def __init__(self) -> None:
        self._cache: dict[str, LedgerAccount] = {}

    def get(self, code: str, **defaults) -> LedgerAccount:
        account = self._cache.get(code)
        if account is None:
            account, _ = LedgerAccount.objects.get_or_create(code=code, defaults=defaults)
            self._cache[code] = account
        return account

    def preload(self, codes) -> None:
        """Fetch many existing accounts in one query (those missing are created on first use)."""
        for account in LedgerAccount.objects.filter(code__in=list(codes)):
            self._cache[account.code] = account

    def system(self, code: str) -> LedgerAccount:
        if code not in self._cache:
            self._cache[code] = system_account(code)
        return self._cache[code]

    def loan(self, loan: Loan, purpose: str) -> LedgerAccount:
        code = f"{purpose}:{loan.pk}"
        return self._cache.get(code) or self.get(
            code, name=f"{purpose.title()} of loan {loan.public_id}", kind=LOAN_ACCOUNT_KINDS[purpose], owner=loan.owner
        )

    def owner_payable(self, owner_id: int, owner_name: str) -> LedgerAccount:
        code = owner_payable_code(owner_id)
        return self._cache.get(code) or self.get(
            code, name=f"Payable to {owner_name}", kind=LedgerAccount.Kind.LIABILITY, owner_id=owner_id
        )


def validate_lines(lines: Sequence[Line]) -> list[Line]:
    """The non-zero lines of an entry; refuses sub-micro amounts and any imbalance."""
    lines = [line for line in lines if line.amount != 0]
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for line in lines:
        if line.amount != money.usd(line.amount):
            raise ValidationError(f"{line.amount} has more than 6 decimal places.")
        totals[line.currency] += line.amount
    unbalanced = {currency: total for currency, total in totals.items() if total != 0}
    if unbalanced or not lines:
        raise ValidationError(f"A journal entry must balance to zero per currency: {unbalanced or 'no lines'}.")
    return lines


def journal_post(*, key: str, description: str, lines: Sequence[Line], **source) -> JournalEntry:
    """Post one balanced entry; a key already posted returns its entry unchanged.

    ``source`` may name what caused it (``payment=``, ``refund=`` or
    ``settlement=``), which is then journaled once only.
    """
    lines = validate_lines(lines)
    existing = JournalEntry.objects.filter(key=key).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            entry = JournalEntry.objects.create(key=key, description=description[:300], **source)
            Posting.objects.bulk_create(
                Posting(entry=entry, account=line.account, amount=line.amount, currency=line.currency, line=line.line)
                for line in lines
            )
    except IntegrityError:
        # A concurrent poster of the same key (or source) won; its entry is the one.
        existing = JournalEntry.objects.filter(key=key).first()
        if existing is None:
            raise
        return existing
    return entry


class EntryBatch:
    """Many entries validated like ``journal_post`` and written in two bulk
    inserts. For batch jobs whose sources are locked and not yet journaled
    (so their keys are new); call inside the job's transaction."""

    def __init__(self) -> None:
        self._entries: list[tuple[JournalEntry, list[Line]]] = []

    def add(self, *, key: str, description: str, lines: Sequence[Line], **source) -> None:
        self._entries.append((JournalEntry(key=key, description=description[:300], **source), validate_lines(lines)))

    @property
    def postings(self) -> int:
        return sum(len(lines) for _, lines in self._entries)

    def flush(self) -> int:
        if not self._entries:
            return 0
        entries = JournalEntry.objects.bulk_create([entry for entry, _ in self._entries], batch_size=2000)
        postings = [
            Posting(
                entry_id=entry.pk,
                account_id=line.account.pk,
                amount=line.amount,
                currency=line.currency,
                line=line.line,
            )
            for entry, (_, lines) in zip(entries, self._entries, strict=True)
            for line in lines
        ]
        Posting.objects.bulk_create(postings, batch_size=5000)
        self._entries.clear()
        return len(postings)
