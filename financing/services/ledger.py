"""Posting to the double-entry ledger.

``journal_post`` is the only way money moves in the books: it refuses an
entry that does not balance (the database refuses it too, on PostgreSQL, at
commit), and it is idempotent by key: posting the same key again returns the
entry already there and writes nothing.
"""

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from accounts.models import OwnerCompany
from financing.chart import SYSTEM_ACCOUNTS, owner_payable_code
from financing.models import JournalEntry, LedgerAccount, Posting
from marketplace import money

_SYSTEM = {code: (name, kind) for code, name, kind in SYSTEM_ACCOUNTS}


@dataclass(frozen=True)
class Line:
    account: LedgerAccount
    amount: Decimal  # debit positive, credit negative
    line: str = ""
    currency: str = "USD"


def system_account(code: str) -> LedgerAccount:
    name, kind = _SYSTEM[code]
    account, _ = LedgerAccount.objects.get_or_create(code=code, defaults={"name": name, "kind": kind})
    return account


def owner_payable_account(owner: OwnerCompany) -> LedgerAccount:
    account, _ = LedgerAccount.objects.get_or_create(
        code=owner_payable_code(owner.pk),
        defaults={"name": f"Payable to {owner.name}", "kind": LedgerAccount.Kind.LIABILITY, "owner": owner},
    )
    return account


def journal_post(*, key: str, description: str, lines: Sequence[Line], **source) -> JournalEntry:
    """Post one balanced entry; a key already posted returns its entry unchanged.

    ``source`` may name what caused it (``payment=``, ``refund=`` or
    ``settlement=``), which is then journaled once only.
    """
    lines = [line for line in lines if line.amount != 0]
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for line in lines:
        if line.amount != money.usd(line.amount):
            raise ValidationError(f"{line.amount} has more than 6 decimal places.")
        totals[line.currency] += line.amount
    unbalanced = {currency: total for currency, total in totals.items() if total != 0}
    if unbalanced or not lines:
        raise ValidationError(f"A journal entry must balance to zero per currency: {unbalanced or 'no lines'}.")
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
