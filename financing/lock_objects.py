"""Financing's row locks, and the only place it takes them (see ``core/locks.py``).

Order: Loan → Collateral → InsuranceClaim → FirstLoss → Wallet → LedgerAccount →
SepaFile → Redemption, by primary
key within a model; financing locks them before calling down into
marketplace services (which lock Server → Listing → Booking → Payment).
Work queues (settlements, payments, refunds, journal entries for an epoch)
are claimed with ``skip_locked``: they never wait, so they cannot deadlock.
"""

from django.db import connection
from django.db.models import Max, QuerySet

from financing.models import (
    Collateral,
    FirstLoss,
    InsuranceClaim,
    JournalEntry,
    LedgerAccount,
    Loan,
    Redemption,
    SepaFile,
    TbillAccrual,
    Wallet,
)


def loan_lock(loan_id: int) -> Loan:
    """One loan (and, joined into the lock, its collateral: Loan before Collateral)."""
    return Loan.objects.select_for_update().select_related("collateral").get(pk=loan_id)


def loans_lock(queryset: QuerySet) -> QuerySet:
    """Loans only (``of=self``: the joined collateral and owner rows stay unlocked), in pk order."""
    return queryset.select_for_update(of=("self",)).order_by("pk")


def collateral_lock(collateral_id: int) -> Collateral:
    return Collateral.objects.select_for_update().get(pk=collateral_id)


def claim_lock(claim_id: int) -> InsuranceClaim:
    return InsuranceClaim.objects.select_for_update().select_related("collateral__server__owner").get(pk=claim_id)


def first_loss_lock(loan: Loan) -> list[FirstLoss]:
    """The first-loss positions standing on a loan, in pk order."""
    return list(FirstLoss.objects.select_for_update().filter(loan=loan, status=FirstLoss.Status.POSTED).order_by("pk"))


def wallet_lock(**holder) -> QuerySet:
    """The wallet of a user or a company (``user=`` or ``company=``)."""
    return Wallet.objects.select_for_update().filter(**holder).order_by("pk")


# pg_advisory_xact_lock key of the wallet index (any constant no other lock uses).
WALLET_INDEX_LOCK_KEY = 0x57414C4C4554  # "WALLET"


def wallet_index_lock() -> int:
    """Take the wallet-index lock, then return the highest index in use (0: only the operator).

    Held to the end of the transaction (a transaction-level advisory lock), so
    one new wallet at a time reads the maximum and inserts the next index:
    two first purchases cannot take the same index, and a rolled-back
    creation gives its index back (indexes stay dense and stable for the
    outbox). Locking the highest wallet row did not serialise anything when
    there was none, nor against a row inserted meanwhile. Taken at the
    ``financing.Wallet`` step of ``LOCK_ORDER``. SQLite needs no lock: its
    transactions take the database's write lock at BEGIN (IMMEDIATE).
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [WALLET_INDEX_LOCK_KEY])
    return Wallet.objects.aggregate(last=Max("index"))["last"] or 0


def ledger_account_lock(account_id: int) -> LedgerAccount:
    return LedgerAccount.objects.select_for_update().get(pk=account_id)


def sepa_file_lock(pk: int) -> SepaFile:
    """A SEPA payout file (after the payee's ledger account, when a payout joins it)."""
    return SepaFile.objects.select_for_update().get(pk=pk)


def redemption_lock(*, request_id: int | None = None, pk: int | None = None) -> QuerySet:
    """The redemption queued on chain under ``request_id`` (or with primary key ``pk``)."""
    rows = Redemption.objects.select_for_update()
    return rows.filter(request_id=request_id) if pk is None else rows.filter(pk=pk)


def work_claim(queryset: QuerySet, *, batch: int | None = None) -> QuerySet:
    """Rows of a work queue not claimed by another worker (``skip_locked``), in pk order."""
    claimed = queryset.select_for_update(skip_locked=True, of=("self",)).order_by("pk")
    return claimed[:batch] if batch else claimed


def journal_entries_claim(queryset: QuerySet) -> QuerySet:
    """Journal entries for an epoch (unordered claim; the caller sorts the ids)."""
    assert queryset.model is JournalEntry
    return queryset.select_for_update(skip_locked=True, of=("self",))


def tbill_accrual_lock(*, now) -> TbillAccrual:
    """The one T-bill accrual row (created at ``now`` the first time)."""
    TbillAccrual.objects.get_or_create(pk=1, defaults={"accrued_to": now})
    return TbillAccrual.objects.select_for_update().get(pk=1)
