"""The sUSDai vault: deposits, the redemption queue, T-bills.

Each service changes the ledger and queues its chain effect
(``chainop_enqueue``) in one database transaction. Where the chain decides
an amount (shares minted on deposit, USDai paid by the queue), a receipt
handler in ``financing.chain.receipts`` records it, keyed by
``tx_hash:log_index``.

Ledger model (USD, 6 decimals):

- deposit: Dr ``usdai:<user>``, Cr sUSDai holders; Dr vault cash, Cr gateway
  clearing (the dollars behind that USDai now belong to the vault);
- a redemption paid: the reverse, at the vault's redemption price;
- loans leave vault cash (``SUSDai.deploy``, queued by ``loan_approve``),
  repayments and net interest come back in each revenue epoch (``recall``
  and ``report``, queued by ``epoch_close``);
- T-bills: cash above the liquidity buffer moves to T-bill holdings
  (``deploy``), which earn ``TBILL_RATE`` a year, paid daily into vault cash.
"""

import uuid
from collections import defaultdict
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import User
from core import money
from financing import lock_objects
from financing.chain.client import ChainError, shares, shares_wei, usd_to_wei
from financing.chain.node import get_chain
from financing.models import ChainOp, JournalEntry, Posting, Redemption, VaultDay, VaultDeposit, Wallet
from financing.selectors.vault import queue_waiting, redemptions_sending, vault_books, vault_position
from financing.services.epochs import epoch_close
from financing.services.ledger import Line, journal_post, system_account
from financing.services.liquidity import queued_redemptions, tbill_accrue, tbill_move
from financing.services.outbox import chainop_enqueue
from financing.services.wallets import usdai_amount, usdai_spendable, wallet_for_user


def vault_deposit(*, user: User, amount: Decimal) -> VaultDeposit:
    """Move ``amount`` of the user's USDai into the vault for sUSDai."""
    amount = usdai_amount(amount)
    with transaction.atomic():
        account = usdai_spendable(user, amount, verb="deposit")
        wallet = wallet_for_user(user=user)
        key = uuid.uuid4().hex
        journal_post(
            key=f"vault:deposit:{key}",
            description=f"{user} deposited {amount} USDai into sUSDai",
            lines=[
                Line(account, amount, "deposit"),
                Line(system_account("susdai_holders"), -amount, "deposit"),
                Line(system_account("vault_cash"), amount, "deposit"),
                Line(system_account("gateway_clearing"), -amount, "deposit"),
            ],
        )
        op = chainop_enqueue(
            key=f"vault:deposit:{key}",
            sender=wallet.index,
            contract="SUSDai",
            function="deposit",
            args=[usd_to_wei(amount), wallet.address],
        )
        return VaultDeposit.objects.create(user=user, amount=amount, op=op)


def redemption_request(*, user: User, shares_amount: Decimal) -> Redemption:
    """Queue ``shares_amount`` sUSDai for redemption (first in, first out)."""
    shares_amount = Decimal(shares_amount)
    if shares_amount <= 0 or shares_amount != shares_amount.quantize(money.SHARE):
        raise ValidationError({"shares": "Enter a positive number of shares (at most 18 decimals)."})
    if not Wallet.objects.filter(user=user).exists():
        raise ValidationError({"shares": "You hold no sUSDai."})
    # Read the chain before taking the lock (no network call while holding a row lock).
    position = vault_position(user=user)
    if position.error:
        raise ValidationError({"shares": "The chain is not reachable just now; try again shortly."})
    with transaction.atomic():
        wallet = lock_objects.wallet_lock(user=user).get()
        # Requests queued since the read, but not yet on chain, count against it too.
        available = max(position.shares - redemptions_sending(user=user), Decimal(0))
        if shares_amount > available:
            raise ValidationError({"shares": f"You can redeem at most {available:,.6f} sUSDai."})
        # Below the minimum only as a holder's whole balance, so that a small holder can always exit.
        if shares_amount < settings.VAULT_MIN_REDEMPTION and shares_amount != available:
            raise ValidationError(
                {
                    "shares": f"The smallest redemption is {settings.VAULT_MIN_REDEMPTION} sUSDai, "
                    "or everything you hold."
                }
            )
        op = chainop_enqueue(
            key=f"vault:redeem:{uuid.uuid4().hex}",
            sender=wallet.index,
            contract="SUSDai",
            function="request_redeem",
            args=[shares_wei(shares_amount)],
        )
        return Redemption.objects.create(user=user, shares=shares_amount, shares_left=shares_amount, op=op)


def redemption_cancel(*, user: User, redemption: Redemption) -> Redemption:
    """Take a queued redemption back: its unpaid shares return to the user's wallet (what was
    already paid stays paid)."""
    if redemption.user_id != user.pk:
        raise PermissionDenied("This is not your redemption.")
    with transaction.atomic():
        wallet = lock_objects.wallet_lock(user=user).get()  # the wallet before its redemptions (LOCK_ORDER)
        locked = lock_objects.redemption_lock(pk=redemption.pk).get()
        if locked.status == Redemption.Status.REQUESTED:
            raise ValidationError({"redemption": "This request is still being sent to the chain; try again shortly."})
        if locked.status != Redemption.Status.QUEUED:
            raise ValidationError({"redemption": f"This redemption is {locked.get_status_display().lower()}."})
        locked.cancel_op = chainop_enqueue(
            key=f"vault:cancel:{locked.pk}",
            sender=wallet.index,
            contract="SUSDai",
            function="cancel_redeem",
            args=[locked.request_id],
        )
        locked.status = Redemption.Status.CANCELLING
        locked.save(update_fields=["status", "cancel_op"])
    return locked


def vault_service(*, max_requests: int = 50) -> ChainOp | None:
    """Queue a ``service`` call when redemptions wait (periodic): custodial requests or linked
    wallets' (the chain's queue is one, first in, first out; whoever a call pays, the receipt
    handler books custodial requests and the chain watcher linked ones); not while one is in flight."""
    if not queue_waiting():
        return None
    if ChainOp.objects.filter(contract="SUSDai", function="service", status__in=ChainOp.IN_FLIGHT).exists():
        return None
    return chainop_enqueue(
        key=f"vault:service:{timezone.now().isoformat()}", contract="SUSDai", function="service", args=[max_requests]
    )


def vault_daily(*, today: date | None = None, now: datetime | None = None) -> dict:
    """Daily: close the epoch, post T-bill interest, rebalance cash against the buffer,
    record the day for APR and, once the books are committed, the day's share price read from
    the chain. Idempotent per date. T-bill interest is posted to the second (``tbill_accrue``):
    from the last posting, which every T-bill move also makes, to ``now``.

    Only the run for the current date records a share price (a price read now is not an
    earlier day's); a chain that cannot be read leaves it empty and the run goes on."""
    now = now or timezone.now()
    today = today or timezone.localdate(now)
    out = {"tbill_interest": Decimal(0), "tbill_buy": Decimal(0), "tbill_sell": Decimal(0)}
    with transaction.atomic():
        out["tbill_interest"] = tbill_accrue(now=now)
    epoch_close(now=now)  # the day's inflows and the interest reach the chain before cash is moved
    with transaction.atomic():
        summary = vault_books()
        buffer = max(summary.nav * settings.VAULT_LIQUIDITY_BUFFER, queued_redemptions())
        idle = summary.cash_on_chain
        if idle > buffer:
            amount = money.cents_down(idle - buffer)
            if amount > 0 and not _posted(f"tbill:buy:{today.isoformat()}"):
                tbill_move(amount, buy=True, key=f"tbill:buy:{today.isoformat()}", now=now)
                out["tbill_buy"] = amount
        elif idle < buffer and summary.tbills > 0:
            amount = min(money.cents(buffer - idle), summary.tbills)
            if amount > 0 and not _posted(f"tbill:sell:{today.isoformat()}"):
                tbill_move(amount, buy=False, key=f"tbill:sell:{today.isoformat()}", now=now)
                out["tbill_sell"] = amount
        VaultDay.objects.update_or_create(date=today, defaults={"nav": vault_books().nav, "income": Decimal(0)})
        _vault_days_income(since=today - timedelta(days=APR_DAYS))
    if out["tbill_buy"] or out["tbill_sell"]:
        epoch_close(now=now)  # the chain's accrual rate follows the T-bills at once
    if today == timezone.localdate():
        _vault_day_share_price(today)  # after the transaction: no chain call while holding locks
    return out


APR_DAYS = 30  # the longest window realised APR looks back over
TBILL_INTEREST = "tbill:interest:"  # + the ISO moments the posting accrued from and to, "from/to"


def _vault_days_income(*, since: date) -> None:
    """Each recorded day's income, on the day it was earned (its economic date), not the day
    it reached the books: a settlement's interest on the day its usage ended
    (``interval_end``), T-bill interest on the day its accrual's midpoint falls in (a daily
    run's posting covers the day before), anything else on the day it was booked. Income booked
    after a day's run (a settlement journaled late, or weeks of settlements journaled at
    once) is counted in its own day when the next run comes, so realised APR, the income in
    the window over the average NAV, is not inflated by a backlog landing on one day."""
    # An entry is booked on or after the day it was earned: the booking date bounds the scan.
    postings = Posting.objects.filter(
        account__code="vault_cash",
        line__in=("to_vault_interest", "tbill_interest"),
        entry__created_at__date__gte=since,
    )
    tbill = Q(entry__key__startswith=TBILL_INTEREST)
    income: dict[date, Decimal] = defaultdict(Decimal)
    for by, rows in (
        ("entry__settlement__interval_end", postings.filter(entry__settlement__isnull=False)),
        ("entry__created_at", postings.filter(entry__settlement__isnull=True).exclude(tbill)),
    ):
        for day, total in (
            rows.annotate(day=TruncDate(by)).values("day").annotate(total=Sum("amount")).values_list("day", "total")
        ):
            income[day] += total
    for key, amount in postings.filter(tbill).values_list("entry__key", "amount"):
        start, end = (datetime.fromisoformat(moment) for moment in key.removeprefix(TBILL_INTEREST).split("/"))
        income[timezone.localdate(start + (end - start) / 2)] += amount
    days = list(VaultDay.objects.filter(date__gte=since))
    for day in days:
        day.income = money.usd(income.get(day.date) or 0)
    VaultDay.objects.bulk_update(days, ["income"])


def _vault_day_share_price(day: date) -> None:
    """The chain's share price, ``convertToAssets(1e18)``, into the day's row (a ChainError
    leaves it empty)."""
    try:
        wei = get_chain().call("SUSDai", "convertToAssets", 10**18)
    except ChainError:
        return
    VaultDay.objects.filter(date=day).update(share_price=shares(wei))  # USDai has 18 decimals, as shares do


def _posted(key: str) -> bool:
    return JournalEntry.objects.filter(key=key).exists()
