"""The vault's liquidity: T-bills bought and sold, and cash found for a loan.

Idle cash above the buffer earns the T-bill rate; a loan is disbursed only
from cash the vault has on chain. ``tbill_move`` changes the books and
queues the chain call (``deploy`` to buy, ``recall`` to sell) in the caller's
transaction; ``loan_liquidity_secure`` sells T-bills first when the free cash
on chain does not cover a loan, and refuses the loan when nothing does.
"""

from decimal import Decimal

from django.core.exceptions import ValidationError

from core import money
from financing.chain.client import usd_to_wei
from financing.models import Redemption
from financing.selectors.vault import vault_books
from financing.services.ledger import Line, journal_post, system_account
from financing.services.outbox import chainop_enqueue


def tbill_move(amount: Decimal, *, buy: bool, key: str) -> None:
    """Buy (or sell) ``amount`` of T-bills with the vault's cash: the books and the chain call."""
    sign = 1 if buy else -1
    journal_post(
        key=key,
        description=f"{'Bought' if buy else 'Sold'} {amount} of T-bills",
        lines=[
            Line(system_account("tbill_holdings"), sign * amount, "tbill_buy" if buy else "tbill_sell"),
            Line(system_account("vault_cash"), -sign * amount, "tbill_buy" if buy else "tbill_sell"),
        ],
    )
    chainop_enqueue(key=key, contract="SUSDai", function="deploy" if buy else "recall", args=[usd_to_wei(amount)])


def queued_redemptions() -> Decimal:
    """Shares waiting in the redemption queue, counted at one dollar each (the books' view)."""
    return money.sum_of(Redemption.objects.filter(status=Redemption.Status.QUEUED), "shares_left")


def loan_liquidity_secure(*, amount: Decimal, key: str) -> Decimal:
    """Make ``amount`` of the vault's cash on chain free for a loan; returns the T-bills sold for it.

    Cash that queued redemptions wait for is not free. When the rest falls
    short, T-bills are sold first (the ``recall`` is queued before the loan's
    ``deploy``, so the chain has the cash when it lends it); when T-bills do
    not cover the gap either, ``ValidationError`` and nothing is written.
    Call inside the approval's transaction.
    """
    books = vault_books()
    free = books.cash_on_chain - queued_redemptions()
    short = amount - free
    if short <= 0:
        return Decimal(0)
    if short > books.tbills:
        raise ValidationError(
            {
                "loan": f"The vault cannot fund ${amount:,.2f} now: ${max(free, Decimal(0)):,.2f} of its cash is free "
                f"and ${books.tbills:,.2f} is in T-bills. Approve it once lenders have deposited more."
            }
        )
    sell = min(money.cents(short), books.tbills)
    tbill_move(sell, buy=False, key=key)
    return sell
