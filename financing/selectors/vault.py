"""The sUSDai vault and USDai wallets as lenders see them: frozen dataclasses out.

Amounts in the books are the ledger's (micro-dollars); share prices and a
lender's shares come from the chain. When the chain cannot be asked, the
chain's fields are ``None`` and ``error`` (or ``chain_error``) says why: a
read never fails because the chain is down.
"""

from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Sum
from django.utils import timezone

from accounts.models import User
from accounts.selectors import lender_profile_for_user, user_has_mfa
from core import money
from financing.chain.client import ChainError, shares, shares_wei, wei_to_usd
from financing.chain.node import get_chain
from financing.chart_of_accounts import INFLOW_LINES
from financing.models import (
    FirstLoss,
    Loan,
    Posting,
    Redemption,
    TbillAccrual,
    VaultDay,
    VaultDeposit,
    Wallet,
    WalletOperation,
)
from financing.selectors.ledger import codes_balance

_WAITING = (Redemption.Status.REQUESTED, Redemption.Status.QUEUED)


def _queued_custodial():
    return Redemption.objects.filter(status=Redemption.Status.QUEUED)


def _queued_linked():
    """Requests that linked (own) wallets made on chain, as the watcher recorded them, not yet paid."""
    return WalletOperation.objects.filter(
        kind=WalletOperation.Kind.REDEEM, status=WalletOperation.Status.CONFIRMED, shares_left__gt=0
    )


def queue_waiting() -> bool:
    """Whether any request waits in the vault's queue (custodial, or a linked wallet's)."""
    return _queued_custodial().exists() or _queued_linked().exists()


def queued_shares() -> Decimal:
    """Shares waiting in the redemption queue, whoever asked: custodial requests and linked wallets'."""
    return money.sum_of(_queued_custodial(), "shares_left") + money.sum_of(_queued_linked(), "shares_left")


@dataclass(frozen=True)
class LenderOverview:
    wallet_address: str  # the lender's own (outside) address from their profile, "" if none
    mfa_enabled: bool


def lender_overview(*, user: User) -> LenderOverview:
    """What the lender dashboard shows about the lender's own account."""
    profile = lender_profile_for_user(user)
    return LenderOverview(wallet_address=profile.wallet_address if profile else "", mfa_enabled=user_has_mfa(user))


def wallet_address(*, user: User) -> str:
    """The user's custodial address, or "" before their first USDai (a page never creates one)."""
    return Wallet.objects.filter(user=user).values_list("address", flat=True).first() or ""


# --- The vault's books -------------------------------------------------------------------


@dataclass(frozen=True)
class Inflows:
    """Vault cash that reached the ledger but not yet the chain (no epoch yet), by line."""

    principal: Decimal  # repaid loan principal
    interest: Decimal  # loan interest net of the protocol fee
    tbill_interest: Decimal

    @property
    def total(self) -> Decimal:
        return self.principal + self.interest + self.tbill_interest


def unreported_inflows() -> Inflows:
    rows = dict(
        Posting.objects.filter(account__code="vault_cash", line__in=INFLOW_LINES, entry__epoch_mark__isnull=True)
        .values("line")
        .annotate(s=Sum("amount"))
        .values_list("line", "s")
    )
    principal, interest, tbill = (money.usd(rows.get(line) or 0) for line in INFLOW_LINES)
    return Inflows(principal=principal, interest=interest, tbill_interest=tbill)


@dataclass(frozen=True)
class VaultSummary:
    """Cash, T-bills and loans (ledger); the share price, accrued interest and profit still
    locked (chain); realised APR (daily history).

    The vault has one share price for deposits and redemptions alike
    (``convertToAssets(1e18)``): interest is counted in it second by second as it accrues,
    only surprise income (beyond what was accrued) streams in over the unlock period, and a
    loss lowers it for every holder at once."""

    cash: Decimal
    cash_on_chain: Decimal  # vault cash less the inflows not yet reported to the chain
    tbills: Decimal
    loans: Decimal
    nav: Decimal  # the books' NAV, the vault's TVL
    apr_7: Decimal | None
    apr_30: Decimal | None
    inflow_per_day: Decimal
    # From the chain; None when it was not asked or could not be.
    share_price: Decimal | None = None  # USDai a share is worth, 18 decimals
    accrued: Decimal | None = None  # interest accrued, not yet received, counted in the price
    locked_profit: Decimal | None = None  # surprise gains still streaming into the price
    total_assets: Decimal | None = None
    supply: Decimal | None = None
    chain_error: str = ""

    @property
    def apy_30(self) -> Decimal | None:
        return apy(self.apr_30)


def apy(apr: Decimal | None) -> Decimal | None:
    """A simple annual rate compounded daily: ``(1 + apr/365)^365 − 1`` (a fraction, 4 dp)."""
    if apr is None:
        return None
    return ((1 + apr / 365) ** 365 - 1).quantize(Decimal("0.0001"))


def loans_value() -> Decimal:
    """What the vault's loans are worth: principal and claim receivables, less the allowance
    for expected losses."""
    return (
        codes_balance(code__startswith="principal:")
        + codes_balance(code__startswith="claim:")
        + codes_balance(code__startswith="allowance:")
    )


@dataclass(frozen=True)
class Accrual:
    """Income the vault has earned and not yet received, and the rate it grows at."""

    accrued: Decimal  # USD, to the moment asked
    per_second: Decimal  # USD a second


SECONDS_PER_YEAR = Decimal(365 * 24 * 3600)


def vault_accrual(*, at: datetime | None = None) -> Accrual:
    """Accrued income as of ``at``: each accruing loan's unpaid interest and its interest since
    its last accrual, net of the protocol fee and of first-loss premiums, plus T-bill interest
    since the last daily posting; and the rate all of it grows at."""
    at = at or timezone.now()
    loans = list(Loan.objects.filter(status=Loan.Status.ACTIVE).values_list("pk", "apr", "interest_accrued_to"))
    codes = [f"{kind}:{pk}" for pk, _, _ in loans for kind in ("principal", "interest")]
    balances = dict(
        Posting.objects.filter(account__code__in=codes)
        .values("account__code")
        .annotate(total=Sum("amount"))
        .values_list("account__code", "total")
    )
    premium = dict(
        FirstLoss.objects.filter(loan_id__in=[pk for pk, _, _ in loans], status=FirstLoss.Status.POSTED)
        .values("loan_id")
        .annotate(share=Sum("premium_share"))
        .values_list("loan_id", "share")
    )
    keep = 1 - settings.LOAN_PROTOCOL_FEE
    accrued = per_second = Decimal(0)
    for pk, apr, accrued_to in loans:
        principal = max(Decimal(balances.get(f"principal:{pk}") or 0), Decimal(0))
        unpaid = max(Decimal(balances.get(f"interest:{pk}") or 0), Decimal(0))
        share = keep * (1 - min(Decimal(premium.get(pk) or 0), Decimal(1)))
        rate = principal * apr / SECONDS_PER_YEAR
        since = Decimal(max((at - accrued_to).total_seconds(), 0)) if accrued_to else Decimal(0)
        accrued += (unpaid + rate * since) * share
        per_second += rate * share
    tbills = codes_balance(code="tbill_holdings")
    if tbills > 0:
        # T-bill interest is posted to the second, up to the last posting: what accrued since.
        rate = tbills * settings.TBILL_RATE / SECONDS_PER_YEAR
        accrued += rate * Decimal(max((at - _tbill_accruing_since(at)).total_seconds(), 0))
        per_second += rate
    return Accrual(accrued=money.usd(accrued), per_second=per_second)


def _tbill_accruing_since(at: datetime) -> datetime:
    """When T-bill interest was last posted to (``financing.services.liquidity.tbill_accrue``)."""
    return TbillAccrual.objects.values_list("accrued_to", flat=True).first() or at


def vault_books() -> VaultSummary:
    """The vault from the ledger alone (no chain call: safe inside a transaction)."""
    cash = codes_balance(code="vault_cash")
    tbills = codes_balance(code="tbill_holdings")
    loans = loans_value()
    return VaultSummary(
        cash=cash,
        cash_on_chain=cash - unreported_inflows().total,
        tbills=tbills,
        loans=loans,
        nav=cash + tbills + loans,
        apr_7=realised_apr(days=7),
        apr_30=realised_apr(days=30),
        inflow_per_day=_inflow_per_day(),
    )


def vault_summary() -> VaultSummary:
    """The vault's books and, from the chain, its share price, accrued interest and locked profit."""
    books = vault_books()
    try:
        c = get_chain()
        return replace(
            books,
            share_price=shares(c.call("SUSDai", "convertToAssets", 10**18)),  # USDai has 18 decimals too
            accrued=wei_to_usd(c.call("SUSDai", "accrued")),
            locked_profit=wei_to_usd(c.call("SUSDai", "locked_profit")),
            total_assets=wei_to_usd(c.call("SUSDai", "totalAssets")),
            supply=shares(c.call("SUSDai", "totalSupply")),
        )
    except ChainError as exc:
        return replace(books, chain_error=str(exc))


def _inflow_per_day(days: int = 7) -> Decimal:
    since = timezone.now() - timedelta(days=days)
    total = money.sum_of(
        Posting.objects.filter(account__code="vault_cash", line__in=INFLOW_LINES, entry__created_at__gte=since)
    )
    return money.usd(total / days)


def vault_inflows_since(since: datetime) -> Decimal:
    return money.usd(
        money.sum_of(
            Posting.objects.filter(account__code="vault_cash", line__in=INFLOW_LINES, entry__created_at__gte=since)
        )
    )


def realised_apr(*, days: int, today: date | None = None) -> Decimal | None:
    """The income the vault actually earned over the last ``days`` complete days against its
    average NAV, annualised (simple): ``Σ income / average NAV × 365 / days recorded``, over
    the days the daily run recorded in ``[today − days, today)``; None without one.

    Each day's income is what the vault earned that day, by economic date (a settlement's
    interest on the day its usage ended, T-bill interest on the day it accrued; see
    ``financing.services.vault._vault_days_income``), not the day it was booked: weeks of
    settlements journaled at once (the demo seed, a backlog after an outage) count on their
    own days, not all on one. Today is left out: its income is still coming in (its
    settlements through the day, its T-bill interest with tomorrow's run)."""
    today = today or timezone.localdate()
    rows = list(VaultDay.objects.filter(date__gte=today - timedelta(days=days), date__lt=today))
    if not rows:
        return None
    average = sum((r.nav for r in rows), Decimal(0)) / len(rows)
    if average <= 0:
        return None
    income = sum((r.income for r in rows), Decimal(0))
    return (income / average * Decimal(365) / len(rows)).quantize(Decimal("0.0001"))


@dataclass(frozen=True)
class VaultDayPoint:
    """One recorded day: NAV, income earned that day, and the share price its run read."""

    date: date
    nav: Decimal
    income: Decimal
    share_price: Decimal | None  # None when the run could not read the chain (or was not that day's)


def vault_history(*, days: int = 90, today: date | None = None) -> list[VaultDayPoint]:
    """The days the daily run recorded over the trailing ``days``, oldest first."""
    today = today or timezone.localdate()
    rows = VaultDay.objects.filter(date__gt=today - timedelta(days=days), date__lte=today).order_by("date")
    return [
        VaultDayPoint(date=d, nav=nav, income=income, share_price=price)
        for d, nav, income, price in rows.values_list("date", "nav", "income", "share_price")
    ]


# --- A lender's position and redemptions ---------------------------------------------------


@dataclass(frozen=True)
class VaultPosition:
    """The user's sUSDai: shares in the wallet, their value, shares waiting in the queue."""

    address: str  # the custodial wallet, "" before the first USDai
    queued: Decimal  # shares waiting in the redemption queue
    shares: Decimal | None  # None when the chain cannot be read
    value: Decimal | None
    available: Decimal | None  # shares not already asked to redeem
    error: str = ""


def vault_position(*, user: User) -> VaultPosition:
    wallet = Wallet.objects.filter(user=user).first()
    queued = Redemption.objects.filter(user=user, status__in=_WAITING)
    waiting = money.sum_of(queued, "shares_left")
    if wallet is None:
        zero = Decimal(0)
        return VaultPosition(address="", queued=waiting, shares=zero, value=zero, available=zero)
    sending = redemptions_sending(user=user)
    try:
        chain = get_chain()
        held = chain.call("SUSDai", "balanceOf", wallet.address)
        value = wei_to_usd(chain.call("SUSDai", "convertToAssets", held)) if held else Decimal(0)
    except ChainError as exc:
        return VaultPosition(
            address=wallet.address, queued=waiting, shares=None, value=None, available=None, error=str(exc)
        )
    return VaultPosition(
        address=wallet.address,
        queued=waiting,
        shares=shares(held),
        value=value,
        available=max(shares(held) - sending, Decimal(0)),
    )


@dataclass(frozen=True)
class LenderPnl:
    """What a lender put into the vault, took out and holds now: ``pnl = value + redeemed −
    deposited``. ``value`` is the shares in the wallet and the shares escrowed in the queue
    (queued, or being cancelled) at the share price, plus deposits not on chain yet at their
    amount (their shares are not minted yet). The chain's figures are ``None`` when it cannot
    be read, and ``error`` says why."""

    deposited: Decimal  # every deposit's USDai
    redeemed: Decimal  # USDai the queue has paid
    sending: Decimal  # deposits whose shares are not minted yet
    wallet_value: Decimal | None
    queued_value: Decimal | None
    value: Decimal | None
    pnl: Decimal | None
    error: str = ""


_ESCROWED = (Redemption.Status.QUEUED, Redemption.Status.CANCELLING)  # shares the vault holds for the queue


def lender_pnl(*, user: User, position: VaultPosition | None = None) -> LenderPnl:
    """The lender's P&L in the vault (pass ``position`` when it is already read)."""
    deposits = VaultDeposit.objects.filter(user=user)
    redemptions = Redemption.objects.filter(user=user)
    deposited = money.usd(money.sum_of(deposits))
    sending = money.usd(money.sum_of(deposits.filter(shares__isnull=True)))
    redeemed = money.usd(money.sum_of(redemptions, "paid"))
    escrowed = money.sum_of(redemptions.filter(status__in=_ESCROWED), "shares_left")
    position = position or vault_position(user=user)
    error = position.error
    queued_value = None
    if not error:
        try:
            queued_value = (
                wei_to_usd(get_chain().call("SUSDai", "convertToAssets", shares_wei(escrowed)))
                if escrowed
                else Decimal(0)
            )
        except ChainError as exc:
            error = str(exc)
    if error:
        return LenderPnl(deposited, redeemed, sending, position.value, None, None, None, error=error)
    value = position.value + queued_value + sending
    return LenderPnl(deposited, redeemed, sending, position.value, queued_value, value, value + redeemed - deposited)


def redemptions_sending(*, user: User) -> Decimal:
    """Shares asked to redeem whose request is not on chain yet (still in the user's wallet there)."""
    return money.sum_of(Redemption.objects.filter(user=user, status=Redemption.Status.REQUESTED), "shares")


@dataclass(frozen=True)
class RedemptionEstimate:
    position: int  # 1 = next to be paid
    value: Decimal  # what the shares left are worth at the redeem price
    estimate: date | None  # None when no inflow is in sight


def redemption_estimate(*, redemption: Redemption) -> RedemptionEstimate:
    """Queue position and an estimated payment date, from liquidity and recent inflows."""
    # A request not yet on chain (no id) waits behind every queued one; the first id is 0.
    # The queue is first in, first out on chain, linked wallets' requests included.
    ahead = _queued_custodial().exclude(pk=redemption.pk)
    linked_ahead = _queued_linked()
    if redemption.request_id is not None:
        ahead = ahead.filter(request_id__lt=redemption.request_id)
        linked_ahead = linked_ahead.filter(request_id__lt=redemption.request_id)
    shares_ahead = money.sum_of(ahead, "shares_left") + money.sum_of(linked_ahead, "shares_left")
    books = vault_books()
    price = Decimal(1)  # the books' view: one share per dollar
    need = (shares_ahead + redemption.shares_left) * price
    liquid = books.cash_on_chain + books.tbills
    daily = books.inflow_per_day
    if need <= liquid:
        days = 1
    elif daily > 0:
        days = 1 + int(((need - liquid) / daily).to_integral_value(rounding="ROUND_CEILING"))
    else:
        days = None
    return RedemptionEstimate(
        position=ahead.count() + linked_ahead.count() + 1,
        value=money.usd(redemption.shares_left * price),
        estimate=(timezone.now() + timedelta(days=days)).date() if days is not None else None,
    )


def user_redemptions(*, user: User) -> list[tuple[Redemption, RedemptionEstimate | None]]:
    """The user's redemptions, newest first, each with its queue position and estimate while it waits."""
    rows = Redemption.objects.filter(user=user).order_by("-created_at", "-pk")
    return [(r, redemption_estimate(redemption=r) if r.status in _WAITING else None) for r in rows]
