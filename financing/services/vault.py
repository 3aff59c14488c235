"""USDai wallets, the sUSDai vault and its redemption queue, T-bills.

The books and the chain move together: each service below changes the
ledger and queues its chain effect (``chainop_enqueue``) in one database
transaction. Where the chain decides an amount (shares minted on deposit,
USDai paid by the queue), a receipt handler records it, keyed by
``tx_hash:log_index``.

Ledger model (USD, 6 decimals):

- buying USDai: Dr gateway clearing, Cr ``usdai:<user>`` (USDai held for the
  user); the same amount is minted to the user's custodial wallet;
- deposit: Dr ``usdai:<user>``, Cr sUSDai holders; Dr vault cash, Cr gateway
  clearing (the dollars behind that USDai now belong to the vault);
- a redemption paid: the reverse, at the vault's redemption price;
- loans leave vault cash (``SUSDai.deploy``), repayments and net interest
  come back in each revenue epoch (``recall`` and ``report``);
- T-bills: cash above the liquidity buffer moves to T-bill holdings
  (``deploy``), which earn ``TBILL_RATE`` a year, paid daily into vault cash.
"""

import uuid
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from accounts.models import OwnerCompany, User
from core import money
from financing.chain.client import (
    MAX_UINT,
    ChainError,
    address_for,
    is_checksum_address,
    shares,
    shares_wei,
    usd_to_wei,
    wei_to_usd,
)
from financing.chart import usdai_code
from financing.models import (
    ChainOp,
    JournalEntry,
    LedgerAccount,
    Posting,
    Redemption,
    UsdaiPurchase,
    VaultDay,
    VaultDeposit,
    Wallet,
)
from financing.services.ledger import Line, journal_post, system_account
from financing.services.outbox import chainop_enqueue, get_chain, handles
from marketplace.models import Booking
from marketplace.payments import get_gateway
from marketplace.payments.base import GatewayError, PaymentDeclined
from marketplace.payments.usdai import USDAI_LEDGER_DEBITED
from marketplace.services.bookings import booking_pay

INFLOW_LINES = ("to_vault_principal", "to_vault_interest", "tbill_interest")


# --- Wallets -----------------------------------------------------------------------


def _next_index() -> int:
    last = Wallet.objects.select_for_update().order_by("-index").values_list("index", flat=True).first()
    return (last or 0) + 1


def _wallet_create(**holder) -> Wallet:
    with transaction.atomic():
        wallet = Wallet.objects.select_for_update().filter(**holder).first()
        if wallet is not None:
            return wallet
        index = _next_index()
        wallet = Wallet.objects.create(index=index, address=address_for(index), **holder)
        chainop_enqueue(key=f"wallet:{index}:gas", to=wallet.address, value=settings.CHAIN_WALLET_GAS_WEI)
        if "user" in holder:
            # Standing approvals: the vault pulls deposits, the operator burns USDai spent on bookings.
            chain = _addresses()
            chainop_enqueue(
                key=f"wallet:{index}:approve-vault",
                sender=index,
                contract="USDai",
                function="approve",
                args=[chain["SUSDai"], MAX_UINT],
            )
            chainop_enqueue(
                key=f"wallet:{index}:approve-operator",
                sender=index,
                contract="USDai",
                function="approve",
                args=[address_for(0), MAX_UINT],
            )
        return wallet


def _addresses() -> dict[str, str]:
    from financing.models import ChainDeployment

    deployment = ChainDeployment.objects.order_by("-pk").first()
    if deployment is None:
        get_chain()  # the embedded chain records its deployment on first use
        deployment = ChainDeployment.objects.order_by("-pk").first()
    return deployment.addresses


def wallet_for_user(*, user: User) -> Wallet:
    """The user's custodial wallet, created (with gas and approvals queued) on first use."""
    return Wallet.objects.filter(user=user).first() or _wallet_create(user=user)


def wallet_for_company(*, company: OwnerCompany) -> Wallet:
    return Wallet.objects.filter(company=company).first() or _wallet_create(company=company)


def _usdai_account(user: User, *, lock: bool = False) -> LedgerAccount:
    account, _ = LedgerAccount.objects.get_or_create(
        code=usdai_code(user.pk), defaults={"name": f"USDai held for {user}", "kind": LedgerAccount.Kind.LIABILITY}
    )
    if lock:
        account = LedgerAccount.objects.select_for_update().get(pk=account.pk)
    return account


def _balance(account: LedgerAccount) -> Decimal:
    total = money.sum_of(Posting.objects.filter(account=account), "amount")
    return money.usd(-total)  # a liability: credit balance, shown positive


def usdai_balance(*, user: User) -> Decimal:
    account = LedgerAccount.objects.filter(code=usdai_code(user.pk)).first()
    return _balance(account) if account else money.usd(0)


# --- Buying USDai ----------------------------------------------------------------------


def usdai_buy(*, user: User, amount: Decimal, payment_method: str = "", idempotency_key: str = "") -> UsdaiPurchase:
    """Charge ``amount`` USD through the payment gateway and mint as much USDai to the user's wallet."""
    amount = Decimal(amount)
    if amount != money.cents(amount):
        raise ValidationError({"amount": "Enter whole cents."})
    if amount < settings.USDAI_MIN_PURCHASE or amount > settings.USDAI_MAX_PURCHASE:
        raise ValidationError(
            {"amount": f"Buy between ${settings.USDAI_MIN_PURCHASE:,} and ${settings.USDAI_MAX_PURCHASE:,}."}
        )
    gateway = get_gateway()
    key = idempotency_key or f"usdai-{user.pk}-{uuid.uuid4().hex}"
    try:
        result = gateway.charge(
            booking_id="",
            amount=amount,
            idempotency_key=key,
            payment_method=payment_method,
            description=f"USDai for {user}",
        )
    except PaymentDeclined as exc:
        raise ValidationError({"payment_method": f"Your card was declined: {exc}"}) from exc
    except GatewayError as exc:
        raise ValidationError({"payment_method": "The payment service did not answer; try again."}) from exc
    if result.status != "succeeded":
        raise ValidationError({"payment_method": "This card needs a further step; use another card."})
    with transaction.atomic():
        purchase, created = UsdaiPurchase.objects.get_or_create(
            reference=result.reference,
            defaults={"user": user, "amount": amount, "gateway": gateway.name, "is_test": gateway.is_test},
        )
        if not created:
            return purchase
        wallet = wallet_for_user(user=user)
        journal_post(
            key=f"usdai:buy:{purchase.pk}",
            description=f"{user} bought {amount} USDai ({gateway.name} {result.reference})",
            lines=[
                Line(system_account("gateway_clearing"), amount, "usdai_buy"),
                Line(_usdai_account(user), -amount, "usdai_buy"),
            ],
        )
        chainop_enqueue(
            key=f"usdai:mint:{purchase.pk}",
            contract="USDai",
            function="mint",
            args=[wallet.address, usd_to_wei(amount)],
        )
    return purchase


def usdai_withdraw(*, user: User, address: str, amount: Decimal) -> ChainOp:
    """Send USDai from the user's custodial wallet to an outside address (EIP-55 checksummed)."""
    address = (address or "").strip()
    if not is_checksum_address(address):
        raise ValidationError(
            {"address": "Enter a checksummed (EIP-55) Ethereum address, 0x followed by 40 hex digits."}
        )
    amount = Decimal(amount)
    if amount <= 0 or amount != money.usd(amount):
        raise ValidationError({"amount": "Enter a positive amount (at most 6 decimals)."})
    with transaction.atomic():
        account = _usdai_account(user, lock=True)
        balance = _balance(account)
        if amount > balance:
            raise ValidationError({"amount": f"You hold {balance:,.2f} USDai; send at most that."})
        wallet = wallet_for_user(user=user)
        if address == wallet.address:
            raise ValidationError({"address": "That is your InfraFi wallet; enter an outside address."})
        key = uuid.uuid4().hex
        journal_post(
            key=f"usdai:withdraw:{key}",
            description=f"{user} sent {amount} USDai to {address}",
            lines=[Line(account, amount, "withdraw"), Line(system_account("usdai_external"), -amount, "withdraw")],
        )
        return chainop_enqueue(
            key=f"usdai:withdraw:{key}",
            sender=wallet.index,
            contract="USDai",
            function="transfer",
            args=[address, usd_to_wei(amount)],
        )


def booking_pay_usdai(*, booking: Booking, renter: User) -> Booking:
    """Pay a booking from the renter's USDai balance (burned from their wallet)."""
    with transaction.atomic():
        account = _usdai_account(renter, lock=True)
        balance = _balance(account)
        if balance < booking.amount:
            raise ValidationError({"payment_method": f"Your USDai balance is {balance:,.2f}; it does not cover this."})
        wallet = wallet_for_user(user=renter)
        booking = booking_pay(booking=booking, renter=renter, payment_method=USDAI_LEDGER_DEBITED, gateway_name="usdai")
        payment = booking.payments.filter(gateway="usdai", status="succeeded").order_by("-created_at").first()
        if payment is None:
            raise ValidationError({"payment_method": "The USDai payment did not go through."})
        journal_post(
            key=f"usdai:spend:{payment.pk}",
            description=f"{renter} paid booking {booking.public_id} with USDai",
            lines=[
                Line(account, payment.amount, "usdai_spend"),
                Line(system_account("gateway_clearing"), -payment.amount, "usdai_spend"),
            ],
        )
        chainop_enqueue(
            key=f"usdai:burn:payment:{payment.pk}",
            contract="USDai",
            function="burn_from",
            args=[wallet.address, usd_to_wei(payment.amount)],
        )
    return booking


def usdai_refund(*, refund, lines: list[Line]) -> list[Line]:
    """A refund of a USDai payment goes back to the renter's USDai (called while journaling it)."""
    renter = refund.booking.renter
    wallet = wallet_for_user(user=renter)
    chainop_enqueue(
        key=f"usdai:mint:refund:{refund.pk}",
        contract="USDai",
        function="mint",
        args=[wallet.address, usd_to_wei(refund.amount)],
    )
    return [
        *lines,
        Line(system_account("gateway_clearing"), refund.amount, "usdai_refund"),
        Line(_usdai_account(renter), -refund.amount, "usdai_refund"),
    ]


# --- Deposits and redemptions ------------------------------------------------------------


def vault_deposit(*, user: User, amount: Decimal) -> VaultDeposit:
    """Move ``amount`` of the user's USDai into the vault for sUSDai."""
    amount = Decimal(amount)
    if amount <= 0 or amount != money.usd(amount):
        raise ValidationError({"amount": "Enter a positive amount (at most 6 decimals)."})
    with transaction.atomic():
        account = _usdai_account(user, lock=True)
        balance = _balance(account)
        if amount > balance:
            raise ValidationError({"amount": f"You hold {balance:,.2f} USDai; deposit at most that."})
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


@handles("SUSDai.deposit")
def _deposited(op: ChainOp, events: list[dict]) -> None:
    for event in events:
        if event["event"] == "Deposit":
            VaultDeposit.objects.filter(op=op).update(shares=shares(int(event["args"]["shares"])))


def vault_position(*, user: User) -> dict:
    """The user's sUSDai: shares in the wallet, their value, shares waiting in the queue."""
    wallet = Wallet.objects.filter(user=user).first()
    queued = Redemption.objects.filter(user=user, status__in=[Redemption.Status.REQUESTED, Redemption.Status.QUEUED])
    waiting = money.sum_of(queued, "shares_left")
    sending = money.sum_of(queued.filter(status=Redemption.Status.REQUESTED), "shares")
    out = {"address": wallet.address if wallet else "", "shares": None, "value": None, "queued": waiting}
    if wallet is None:
        out |= {"shares": Decimal(0), "value": Decimal(0), "available": Decimal(0)}
        return out
    try:
        chain = get_chain()
        held = chain.call("SUSDai", "balanceOf", wallet.address)
        out["shares"] = shares(held)
        out["value"] = wei_to_usd(chain.call("SUSDai", "convertToAssets", held)) if held else Decimal(0)
        out["available"] = max(out["shares"] - sending, Decimal(0))
    except ChainError as exc:
        out["error"] = str(exc)
    return out


def redemption_request(*, user: User, shares_amount: Decimal) -> Redemption:
    """Queue ``shares_amount`` sUSDai for redemption (first in, first out)."""
    shares_amount = Decimal(shares_amount)
    if shares_amount <= 0 or shares_amount != shares_amount.quantize(money.SHARE):
        raise ValidationError({"shares": "Enter a positive number of shares (at most 18 decimals)."})
    if shares_amount < settings.VAULT_MIN_REDEMPTION:
        raise ValidationError({"shares": f"The smallest redemption is {settings.VAULT_MIN_REDEMPTION} sUSDai."})
    if not Wallet.objects.filter(user=user).exists():
        raise ValidationError({"shares": "You hold no sUSDai."})
    # Read the chain before taking the lock (no network call while holding a row lock).
    position = vault_position(user=user)
    if "error" in position:
        raise ValidationError({"shares": "The chain is not reachable just now; try again shortly."})
    with transaction.atomic():
        wallet = Wallet.objects.select_for_update().get(user=user)
        # Requests queued since the read, but not yet on chain, count against it too.
        sending = money.sum_of(Redemption.objects.filter(user=user, status=Redemption.Status.REQUESTED), "shares")
        available = max(position["shares"] - sending, Decimal(0))
        if shares_amount > available:
            raise ValidationError({"shares": f"You can redeem at most {available:,.6f} sUSDai."})
        op = chainop_enqueue(
            key=f"vault:redeem:{uuid.uuid4().hex}",
            sender=wallet.index,
            contract="SUSDai",
            function="request_redeem",
            args=[shares_wei(shares_amount)],
        )
        return Redemption.objects.create(user=user, shares=shares_amount, shares_left=shares_amount, op=op)


@handles("SUSDai.request_redeem")
def _queued(op: ChainOp, events: list[dict]) -> None:
    for event in events:
        if event["event"] == "RedeemRequested":
            Redemption.objects.filter(op=op).update(
                request_id=int(event["args"]["id"]), status=Redemption.Status.QUEUED
            )


def vault_service(*, max_requests: int = 50) -> ChainOp | None:
    """Queue a ``service`` call when redemptions wait (periodic)."""
    if not Redemption.objects.filter(status=Redemption.Status.QUEUED).exists():
        return None
    if ChainOp.objects.filter(contract="SUSDai", function="service", status__in=["pending", "signed"]).exists():
        return None
    return chainop_enqueue(
        key=f"vault:service:{timezone.now().isoformat()}", contract="SUSDai", function="service", args=[max_requests]
    )


@handles("SUSDai.service")
def _serviced(op: ChainOp, events: list[dict]) -> None:
    for event in events:
        if event["event"] != "RedeemServiced":
            continue
        args = event["args"]
        redemption = Redemption.objects.select_for_update().filter(request_id=int(args["id"])).first()
        if redemption is None:
            continue
        amount = wei_to_usd(int(args["assets"]))
        redemption.shares_left = shares(int(args["remaining_shares"]))
        redemption.paid += amount
        if redemption.shares_left == 0:
            redemption.status, redemption.paid_at = Redemption.Status.PAID, timezone.now()
        redemption.save(update_fields=["shares_left", "paid", "status", "paid_at"])
        if amount > 0:
            journal_post(
                key=f"redeem:{op.tx_hash}:{event['log_index']}",
                description=f"sUSDai redemption #{redemption.request_id} paid {amount} USDai to {redemption.user}",
                lines=[
                    Line(system_account("susdai_holders"), amount, "redemption"),
                    Line(_usdai_account(redemption.user), -amount, "redemption"),
                    Line(system_account("gateway_clearing"), amount, "redemption"),
                    Line(system_account("vault_cash"), -amount, "redemption"),
                ],
            )


def redemption_estimate(*, redemption: Redemption) -> dict:
    """Queue position and an estimated payment date, from liquidity and recent inflows."""
    ahead = Redemption.objects.filter(
        status=Redemption.Status.QUEUED, request_id__lt=redemption.request_id or 2**62
    ).exclude(pk=redemption.pk)
    shares_ahead = money.sum_of(ahead, "shares_left")
    summary = vault_summary(chain=False)
    price = summary["redeem_price"] or Decimal(1)
    need = (shares_ahead + redemption.shares_left) * price
    liquid = summary["cash_on_chain"] + summary["tbills"]
    daily = summary["inflow_per_day"]
    if need <= liquid:
        days = 1
    elif daily > 0:
        days = 1 + int(((need - liquid) / daily).to_integral_value(rounding="ROUND_CEILING"))
    else:
        days = None
    return {
        "position": ahead.count() + 1,
        "value": money.usd(redemption.shares_left * price),
        "estimate": (timezone.now() + timedelta(days=days)).date() if days is not None else None,
    }


# --- The vault's books -------------------------------------------------------------------


def _system_balance(code: str) -> Decimal:
    return money.usd(money.sum_of(Posting.objects.filter(account__code=code), "amount"))


def unreported_inflows() -> dict[str, Decimal]:
    """Vault cash that reached the ledger but not yet the chain (no epoch yet), by line."""
    rows = (
        Posting.objects.filter(account__code="vault_cash", line__in=INFLOW_LINES, entry__epoch_mark__isnull=True)
        .values("line")
        .annotate(s=Sum("amount"))
    )
    out = dict.fromkeys(INFLOW_LINES, Decimal(0))
    out.update({row["line"]: money.usd(row["s"]) for row in rows})
    return out


def vault_summary(*, chain: bool = True) -> dict:
    """Cash, T-bills and loans (ledger); share price (chain); realised APR (daily history)."""
    cash = _system_balance("vault_cash")
    tbills = _system_balance("tbill_holdings")
    loans = money.usd(money.sum_of(Posting.objects.filter(account__code__startswith="principal:"), "amount"))
    pending = unreported_inflows()
    nav = cash + tbills + loans
    out = {
        "cash": cash,
        "cash_on_chain": cash - sum(pending.values()),
        "tbills": tbills,
        "loans": loans,
        "nav": nav,
        "apr_7": realised_apr(days=7),
        "apr_30": realised_apr(days=30),
        "inflow_per_day": _inflow_per_day(),
        "redeem_price": None,
        "deposit_price": None,
        "locked_profit": None,
    }
    if chain:
        try:
            c = get_chain()
            one = 10**18
            out["redeem_price"] = wei_to_usd(c.call("SUSDai", "convertToAssets", one))
            deposit_shares = c.call("SUSDai", "convertToShares", one)
            out["deposit_price"] = (
                (Decimal(one) / Decimal(deposit_shares)).quantize(money.MICRO) if deposit_shares else None
            )
            out["locked_profit"] = wei_to_usd(c.call("SUSDai", "locked_profit"))
            out["total_assets"] = wei_to_usd(c.call("SUSDai", "totalAssets"))
            out["supply"] = shares(c.call("SUSDai", "totalSupply"))
        except ChainError as exc:
            out["chain_error"] = str(exc)
    else:
        out["redeem_price"] = Decimal(1)
    return out


def _inflow_per_day(days: int = 7) -> Decimal:
    since = timezone.now() - timedelta(days=days)
    total = money.sum_of(
        Posting.objects.filter(account__code="vault_cash", line__in=INFLOW_LINES, entry__created_at__gte=since),
        "amount",
    )
    return money.usd(total / days)


def realised_apr(*, days: int, today: date | None = None) -> Decimal | None:
    """Income over the trailing ``days`` against the average NAV, annualised (simple)."""
    today = today or timezone.localdate()
    rows = list(VaultDay.objects.filter(date__gt=today - timedelta(days=days), date__lte=today))
    if not rows:
        return None
    average = sum((r.nav for r in rows), Decimal(0)) / len(rows)
    if average <= 0:
        return None
    income = sum((r.income for r in rows), Decimal(0))
    return (income / average * Decimal(365) / len(rows)).quantize(Decimal("0.0001"))


def vault_daily(*, today: date | None = None) -> dict:
    """Daily: close the epoch, accrue T-bill interest, rebalance cash against the buffer,
    record the day for APR. Idempotent per date."""
    from financing.services.epochs import epoch_close

    today = today or timezone.localdate()
    epoch_close()
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
    epoch_close()  # the interest reaches the chain before cash is moved
    with transaction.atomic():
        summary = vault_summary(chain=False)
        queued = money.sum_of(Redemption.objects.filter(status=Redemption.Status.QUEUED), "shares_left")
        buffer = max(summary["nav"] * settings.VAULT_LIQUIDITY_BUFFER, Decimal(queued))
        idle = summary["cash_on_chain"]
        if idle > buffer:
            amount = money.cents_down(idle - buffer)
            if amount > 0 and not _posted(f"tbill:buy:{today.isoformat()}"):
                _tbill_move(amount, buy=True, key=f"tbill:buy:{today.isoformat()}")
                out["tbill_buy"] = amount
        elif idle < buffer and summary["tbills"] > 0:
            amount = min(money.cents(buffer - idle), summary["tbills"])
            if amount > 0 and not _posted(f"tbill:sell:{today.isoformat()}"):
                _tbill_move(amount, buy=False, key=f"tbill:sell:{today.isoformat()}")
                out["tbill_sell"] = amount
        income = money.sum_of(
            Posting.objects.filter(
                account__code="vault_cash",
                line__in=("to_vault_interest", "tbill_interest"),
                entry__created_at__date=today,
            ),
            "amount",
        )
        VaultDay.objects.update_or_create(
            date=today, defaults={"nav": vault_summary(chain=False)["nav"], "income": money.usd(income)}
        )
    return out


def _posted(key: str) -> bool:
    return JournalEntry.objects.filter(key=key).exists()


def _tbill_move(amount: Decimal, *, buy: bool, key: str) -> None:
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


def loan_disbursement_onchain(*, loan, principal: Decimal) -> None:
    """Loans leave the vault's cash on chain as they do in the books (called by ``loan_approve``)."""
    chainop_enqueue(key=f"loan:{loan.pk}:deploy", contract="SUSDai", function="deploy", args=[usd_to_wei(principal)])


def vault_inflows_since(since: datetime) -> Decimal:
    return money.usd(
        money.sum_of(
            Posting.objects.filter(account__code="vault_cash", line__in=INFLOW_LINES, entry__created_at__gte=since),
            "amount",
        )
    )
