"""The vault's liquidity: T-bills bought and sold, and cash found for a loan.

Idle cash above the buffer earns the T-bill rate, accrued to the second
(``tbill_accrue``); a loan is disbursed only
from cash the vault has on chain. ``tbill_move`` changes the books and
queues the chain call (``deploy`` to buy, ``recall`` to sell) in the caller's
transaction; ``loan_liquidity_secure`` sells T-bills first when the free cash
on chain does not cover a loan, and refuses the loan when nothing does.
"""

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone

from core import money
from financing import lock_objects
from financing.chain.client import usd_to_wei
from financing.models import Posting
from financing.selectors.vault import queued_shares, vault_books
from financing.services.ledger import Line, journal_post, system_account
from financing.services.outbox import chainop_enqueue

SECONDS_PER_YEAR = Decimal(365 * 24 * 3600)


def tbill_accrue(*, now: datetime) -> Decimal:
    """Post the T-bills' interest from the last posting to ``now``: the holdings × the rate, to
    the second (half-up to the micro-dollar). Called before every move and by the daily run, so
    each holding earns for exactly the time it was held; a second call at the same moment
    posts nothing."""
    accrual = lock_objects.tbill_accrual_lock(now=now)
    if now <= accrual.accrued_to:
        return Decimal(0)
    holdings = money.sum_of(Posting.objects.filter(account__code="tbill_holdings"), "amount")
    seconds = Decimal((now - accrual.accrued_to).total_seconds())
    interest = (holdings * settings.TBILL_RATE * seconds / SECONDS_PER_YEAR).quantize(
        money.MICRO, rounding=ROUND_HALF_UP
    )
    if interest > 0:
        journal_post(
            key=f"tbill:interest:{accrual.accrued_to.isoformat()}/{now.isoformat()}",
            description=f"T-bill interest from {accrual.accrued_to:%Y-%m-%d %H:%M:%S} to {now:%Y-%m-%d %H:%M:%S}",
            lines=[
                Line(system_account("vault_cash"), interest, "tbill_interest"),
                Line(system_account("tbill_income"), -interest, "tbill_interest"),
            ],
        )
    accrual.accrued_to = now
    accrual.save(update_fields=["accrued_to"])
    return max(interest, Decimal(0))


def tbill_move(amount: Decimal, *, buy: bool, key: str, now: datetime | None = None) -> None:
    """Buy (or sell) ``amount`` of T-bills with the vault's cash: the books and the chain call.
    The holdings' interest to ``now`` is posted first."""
    tbill_accrue(now=now or timezone.now())
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
    """Shares waiting in the redemption queue (custodial and linked wallets'), at one dollar each
    (the books' view)."""
    return queued_shares()


def loan_liquidity_secure(*, amount: Decimal, key: str, now: datetime | None = None) -> Decimal:
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
    tbill_move(sell, buy=False, key=key, now=now)
    return sell
