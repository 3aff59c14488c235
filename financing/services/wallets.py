"""USDai wallets: custodial addresses, buying, sending out, paying bookings, refunds.

Each service changes the ledger and queues its chain effect
(``chainop_enqueue``) in one database transaction.

Ledger model (USD, 6 decimals): buying USDai debits gateway clearing and
credits ``usdai:<user>`` (USDai held for the user), and the same amount is
minted to the user's custodial wallet; paying a booking with USDai is the
reverse, and the USDai is burned; a refund of a USDai payment mints it back.
"""

import uuid
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from accounts.models import OwnerCompany, User
from core import money
from financing import lock_objects
from financing.chain.client import MAX_UINT, address_for, is_checksum_address, usd_to_wei
from financing.chain.node import contract_addresses
from financing.chart_of_accounts import usdai_code
from financing.models import ChainOp, LedgerAccount, UsdaiPurchase, Wallet
from financing.selectors.ledger import usdai_balance_of
from financing.services.ledger import Line, journal_post, system_account
from financing.services.outbox import chainop_enqueue
from marketplace.models import Booking
from marketplace.payments import get_gateway
from marketplace.payments.base import GatewayError, PaymentDeclined
from marketplace.payments.usdai import USDAI_LEDGER_DEBITED
from marketplace.services.bookings import booking_pay


def _next_index() -> int:
    last = lock_objects.wallet_last_lock().values_list("index", flat=True).first()
    return (last or 0) + 1


def _wallet_create(**holder) -> Wallet:
    with transaction.atomic():
        wallet = lock_objects.wallet_lock(**holder).first()
        if wallet is not None:
            return wallet
        index = _next_index()
        wallet = Wallet.objects.create(index=index, address=address_for(index), **holder)
        chainop_enqueue(key=f"wallet:{index}:gas", to=wallet.address, value=settings.CHAIN_WALLET_GAS_WEI)
        if "user" in holder:
            # Standing approvals: the vault pulls deposits, the operator burns USDai spent on bookings.
            chainop_enqueue(
                key=f"wallet:{index}:approve-vault",
                sender=index,
                contract="USDai",
                function="approve",
                args=[contract_addresses()["SUSDai"], MAX_UINT],
            )
            chainop_enqueue(
                key=f"wallet:{index}:approve-operator",
                sender=index,
                contract="USDai",
                function="approve",
                args=[address_for(0), MAX_UINT],
            )
        return wallet


def wallet_for_user(*, user: User) -> Wallet:
    """The user's custodial wallet, created (with gas and approvals queued) on first use."""
    return Wallet.objects.filter(user=user).first() or _wallet_create(user=user)


def wallet_for_company(*, company: OwnerCompany) -> Wallet:
    return Wallet.objects.filter(company=company).first() or _wallet_create(company=company)


def usdai_account(user: User, *, lock: bool = False) -> LedgerAccount:
    """The ledger account of the USDai held for ``user`` (created on first use; locked if asked)."""
    account, _ = LedgerAccount.objects.get_or_create(
        code=usdai_code(user.pk), defaults={"name": f"USDai held for {user}", "kind": LedgerAccount.Kind.LIABILITY}
    )
    if lock:
        account = lock_objects.ledger_account_lock(account.pk)
    return account


def usdai_amount(amount) -> Decimal:
    """A positive USDai amount, exact to the micro-dollar (else a field error)."""
    amount = Decimal(amount)
    if amount <= 0 or amount != money.usd(amount):
        raise ValidationError({"amount": "Enter a positive amount (at most 6 decimals)."})
    return amount


def usdai_spendable(user: User, amount: Decimal, *, verb: str) -> LedgerAccount:
    """The user's USDai account, locked, once it is known to hold ``amount`` (call inside a transaction)."""
    account = usdai_account(user, lock=True)
    balance = usdai_balance_of(account)
    if amount > balance:
        raise ValidationError({"amount": f"You hold {balance:,.2f} USDai; {verb} at most that."})
    return account


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
                Line(usdai_account(user), -amount, "usdai_buy"),
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
    amount = usdai_amount(amount)
    with transaction.atomic():
        account = usdai_spendable(user, amount, verb="send")
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
        account = usdai_account(renter, lock=True)
        balance = usdai_balance_of(account)
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
        Line(usdai_account(renter), -refund.amount, "usdai_refund"),
    ]
