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
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import User
from core import money
from financing import lock_objects
from financing.chain.client import shares_wei, usd_to_wei
from financing.models import ChainOp, JournalEntry, Posting, Redemption, VaultDay, VaultDeposit, Wallet
from financing.selectors.vault import redemptions_sending, vault_books, vault_position
from financing.services.epochs import epoch_close
from financing.services.ledger import Line, journal_post, system_account
from financing.services.liquidity import queued_redemptions, tbill_move
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
    """Queue a ``service`` call when redemptions wait (periodic)."""
    if not Redemption.objects.filter(status=Redemption.Status.QUEUED).exists():
        return None
    if ChainOp.objects.filter(contract="SUSDai", function="service", status__in=["pending", "signed"]).exists():
        return None
    return chainop_enqueue(
        key=f"vault:service:{timezone.now().isoformat()}", contract="SUSDai", function="service", args=[max_requests]
    )


def vault_daily(*, today: date | None = None, now: datetime | None = None) -> dict:
    """Daily: close the epoch, post T-bill interest, rebalance cash against the buffer,
    record the day for APR. Idempotent per date. T-bill interest posted on a date is for the
    day that ended at its start (the holdings carried into it), paid in arrears."""
    now = now or timezone.now()
    today = today or timezone.localdate(now)
    epoch_close(now=now)
    out = {"tbill_interest": Decimal(0), "tbill_buy": Decimal(0), "tbill_sell": Decimal(0)}
    with transaction.atomic():
        # The day's interest is on the holdings carried into it: T-bills bought (or sold) by an
        # earlier run of the same day earn from the next day, so a second run adds nothing.
        moves = [f"tbill:buy:{today.isoformat()}", f"tbill:sell:{today.isoformat()}"]
        tbills = money.usd(
            money.sum_of(Posting.objects.filter(account__code="tbill_holdings").exclude(entry__key__in=moves), "amount")
        )
        interest = (tbills * settings.TBILL_RATE / 365).quantize(money.MICRO, rounding=ROUND_HALF_UP)
        if interest > 0 and not _posted(f"tbill:interest:{today.isoformat()}"):
            journal_post(
                key=f"tbill:interest:{today.isoformat()}",
                description=f"T-bill interest for {today}",
                lines=[
                    Line(system_account("vault_cash"), interest, "tbill_interest"),
                    Line(system_account("tbill_income"), -interest, "tbill_interest"),
                ],
            )
            out["tbill_interest"] = interest
    epoch_close(now=now)  # the interest reaches the chain before cash is moved
    with transaction.atomic():
        summary = vault_books()
        buffer = max(summary.nav * settings.VAULT_LIQUIDITY_BUFFER, queued_redemptions())
        idle = summary.cash_on_chain
        if idle > buffer:
            amount = money.cents_down(idle - buffer)
            if amount > 0 and not _posted(f"tbill:buy:{today.isoformat()}"):
                tbill_move(amount, buy=True, key=f"tbill:buy:{today.isoformat()}")
                out["tbill_buy"] = amount
        elif idle < buffer and summary.tbills > 0:
            amount = min(money.cents(buffer - idle), summary.tbills)
            if amount > 0 and not _posted(f"tbill:sell:{today.isoformat()}"):
                tbill_move(amount, buy=False, key=f"tbill:sell:{today.isoformat()}")
                out["tbill_sell"] = amount
        VaultDay.objects.update_or_create(date=today, defaults={"nav": vault_books().nav, "income": Decimal(0)})
        _vault_days_income(since=today - timedelta(days=APR_DAYS))
    return out


APR_DAYS = 30  # the longest window realised APR looks back over


def _vault_days_income(*, since: date) -> None:
    """Each recorded day's income, from every entry dated that day: income that arrives after a
    day's run (later the same day) is counted when the next run comes, not lost."""
    income = dict(
        Posting.objects.filter(
            account__code="vault_cash",
            line__in=("to_vault_interest", "tbill_interest"),
            entry__created_at__date__gte=since,
        )
        .annotate(day=TruncDate("entry__created_at"))
        .values("day")
        .annotate(total=Sum("amount"))
        .values_list("day", "total")
    )
    days = list(VaultDay.objects.filter(date__gte=since))
    for day in days:
        day.income = money.usd(income.get(day.date) or 0)
    VaultDay.objects.bulk_update(days, ["income"])


def _posted(key: str) -> bool:
    return JournalEntry.objects.filter(key=key).exists()
