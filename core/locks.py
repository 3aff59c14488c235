"""The one order in which every service takes row locks.

A money-moving service runs in ``transaction.atomic()`` and locks the rows it
changes before reading what it decides on. Two services that lock the same
rows in different orders can deadlock, so every service follows one global
order:

1. by model, in the order of ``LOCK_ORDER`` below;
2. within one model, by primary key (ascending).

The order runs from the higher apps to the lower ones because a service that
holds its own app's locks calls the services of the apps below it (the
scheduler moves a booking while it holds the job; financing pays a booking
from a USDai balance it holds), never the other way round. A service that
needs a row of an earlier model after a later one has been locked must
release its transaction and start again, not lock "backwards".

Each app takes its locks through its own ``lock_objects`` module (Saleor's
``lock_objects.py``), and only there: ``tests/test_layout.py`` fails on a
``select_for_update`` anywhere else. Work queues claimed with
``skip_locked=True`` (settlements, payments and refunds pulled into the
ledger, entries taken into an epoch) never wait for a lock, so they cannot
deadlock; they are listed last.
"""

LOCK_ORDER: tuple[str, ...] = (
    # scheduler
    "scheduler.Job",
    "scheduler.SimJob",
    # financing
    "financing.Loan",
    "financing.Collateral",
    "financing.InsuranceClaim",
    "financing.FirstLoss",
    "financing.Wallet",
    "financing.LedgerAccount",
    "financing.SepaFile",
    "financing.Redemption",
    "financing.TbillAccrual",
    # marketplace
    "marketplace.Server",
    "marketplace.Listing",
    "marketplace.Booking",
    "marketplace.Payment",
    # accounts
    "accounts.RenterProfile",
    "accounts.LenderProfile",
    # claimed with skip_locked (never wait)
    "marketplace.Settlement",
    "marketplace.Refund",
    "financing.JournalEntry",
)
