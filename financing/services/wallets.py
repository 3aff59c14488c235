"""USDai wallets: custodial addresses, buying, sending out, paying bookings, refunds.

Each service changes the ledger and queues its chain effect
(``chainop_enqueue``) in one database transaction.

Buying runs in three steps (pending purchase committed, charge, completion),
recovered by ``usdai_purchases_sweep``: see ``usdai_buy``. With a card gateway
the wallet page buys through the same PaymentIntent + webhook path as a
booking (``usdai_buy_start``): the PaymentIntent is created unconfirmed with
``usdai_purchase`` in its metadata, Stripe.js confirms it in the browser, and
whichever of the webhook (``usdai_purchase_paid``, registered with
``marketplace.payments.purposes`` by ``FinancingConfig.ready``), the return
page (``usdai_purchase_return``) or the sweep reads the success first
completes the purchase, exactly once (``_purchase_complete``). Wallet indexes are
allocated under ``lock_objects.wallet_index_lock``.

Ledger model (USD, 6 decimals): buying USDai debits gateway clearing and
credits ``usdai:<user>`` (USDai held for the user), and the same amount is
minted to the user's custodial wallet; paying a booking with USDai is the
reverse, and the USDai is burned; a refund of a USDai payment mints it back.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import OwnerCompany, User
from core import money
from core.api import digits
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

logger = logging.getLogger(__name__)

# A pending purchase younger than this is a buy still in progress: the sweep leaves it alone.
SWEEP_AFTER = timedelta(minutes=5)
# Past this, the gateway may have forgotten the idempotency key (Stripe: 24 h), and presenting
# the charge again could make a second one.
SWEEP_REPLAY_LIMIT = timedelta(hours=23)


def _wallet_create(**holder) -> Wallet:
    with transaction.atomic():
        # The index lock first, then the holder: a racing first use of the same holder
        # waits here and then finds the wallet the other one committed.
        last = lock_objects.wallet_index_lock()
        wallet = lock_objects.wallet_lock(**holder).first()
        if wallet is not None:
            return wallet
        index = last + 1
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
    """Charge ``amount`` USD through the payment gateway and mint as much USDai to the user's wallet.

    Three steps, so that a captured charge is always a purchase:

    1. write the purchase, pending, with the idempotency key of its charge
       (and the buyer's wallet), and commit;
    2. charge under that key, holding no lock (the gateway never charges one
       key twice: the same call again answers the first charge);
    3. complete it in a second transaction: succeeded, the ledger entry, the
       mint queued, exactly once (``_purchase_complete``).

    A declined card, a card that needs 3-D Secure, or a request the gateway
    refuses marks the purchase failed (nothing charged, nothing posted).
    ``idempotency_key`` names the caller's attempt: the same key again returns
    that purchase, charged once. Recovery: a crash, or a gateway that does not
    answer, between steps 1 and 3 leaves the purchase pending, and
    ``usdai_purchases_sweep`` completes or fails it.
    """
    amount = Decimal(amount)
    if amount != money.cents(amount):
        raise ValidationError({"amount": "Enter whole cents."})
    if amount < settings.USDAI_MIN_PURCHASE or amount > settings.USDAI_MAX_PURCHASE:
        raise ValidationError(
            {"amount": f"Buy between ${settings.USDAI_MIN_PURCHASE:,} and ${settings.USDAI_MAX_PURCHASE:,}."}
        )
    gateway = get_gateway()
    purchase = _purchase_open(
        user=user, amount=amount, gateway=gateway, payment_method=payment_method, idempotency_key=idempotency_key
    )
    if purchase.status == UsdaiPurchase.Status.SUCCEEDED:
        return purchase
    if purchase.status == UsdaiPurchase.Status.FAILED:
        raise ValidationError({"payment_method": purchase.failure_message or "This purchase did not go through."})
    try:
        result = _purchase_charge(purchase, gateway)
    except PaymentDeclined as exc:
        message = f"Your card was declined: {exc}"
        _purchase_fail(purchase_id=purchase.pk, reference=exc.reference, message=message)
        raise ValidationError({"payment_method": message}) from exc
    except GatewayError as exc:
        if exc.retryable:
            # Charged or not, we cannot tell: the purchase stays pending for the sweep.
            message = "The payment service did not answer; the purchase completes or is cancelled in minutes."
            raise ValidationError({"payment_method": message}) from exc
        _purchase_fail(purchase_id=purchase.pk, message=f"The payment service refused the payment: {exc}")
        raise ValidationError({"payment_method": "The payment service refused this payment; try again."}) from exc
    return _purchase_settle(purchase=purchase, result=result, raise_refusal=True)


def _purchase_open(*, user: User, amount: Decimal, gateway, payment_method: str, idempotency_key: str) -> UsdaiPurchase:
    """Step 1: the pending purchase (or the caller's earlier attempt under the same key), committed."""
    with transaction.atomic():
        wallet_for_user(user=user)
        if not idempotency_key:
            purchase = UsdaiPurchase.objects.create(
                user=user,
                amount=amount,
                gateway=gateway.name,
                is_test=gateway.is_test,
                payment_method=payment_method,
                idempotency_key=f"usdai-new-{uuid.uuid4().hex}",
            )
            purchase.idempotency_key = f"usdai-purchase-{purchase.pk}"
            purchase.save(update_fields=["idempotency_key"])
            return purchase
        key = f"usdai-{user.pk}-{idempotency_key}"
        try:
            with transaction.atomic():
                purchase, _ = UsdaiPurchase.objects.get_or_create(
                    idempotency_key=key,
                    defaults={
                        "user": user,
                        "amount": amount,
                        "gateway": gateway.name,
                        "is_test": gateway.is_test,
                        "payment_method": payment_method,
                    },
                )
        except IntegrityError:
            purchase = UsdaiPurchase.objects.get(idempotency_key=key)
    if purchase.amount != amount or purchase.gateway != gateway.name or purchase.payment_method != payment_method:
        raise ValidationError({"amount": "This purchase was already made with other details."})
    return purchase


def _purchase_charge(purchase: UsdaiPurchase, gateway=None):
    """Step 2: the charge of a purchase; always the same request for one purchase, so the same charge."""
    gateway = gateway or get_gateway(purchase.gateway)
    return gateway.charge(
        booking_id="",
        amount=purchase.amount,
        idempotency_key=purchase.idempotency_key,
        payment_method=purchase.payment_method,
        description=f"USDai purchase {purchase.pk}",
        metadata={"usdai_purchase": str(purchase.pk)},
        receipt_email=purchase.user.email if gateway.browser_cards else "",
    )


# A PaymentIntent waiting for the buyer's browser (Stripe.js) to confirm it: not a refusal.
_AWAITING_BROWSER = ("requires_payment_method", "requires_confirmation", "requires_action")


@dataclass(frozen=True)
class CardPurchase:
    """A purchase whose PaymentIntent Stripe.js confirms in the browser with ``client_secret``."""

    purchase: UsdaiPurchase
    client_secret: str
    status: str  # the PaymentIntent's status


def usdai_buy_start(*, user: User, amount: Decimal, idempotency_key: str = "") -> UsdaiPurchase:
    """Open a purchase paid by a card entered in the browser: the pending purchase, then its
    PaymentIntent created without a payment method (the buyer confirms it on the wallet page).

    Steps 1 and 2 of ``usdai_buy``; step 3 is the webhook, the return page or the sweep.
    """
    gateway = get_gateway()
    if not gateway.browser_cards:
        return usdai_buy(user=user, amount=amount, idempotency_key=idempotency_key)
    amount = Decimal(amount)
    if amount != money.cents(amount):
        raise ValidationError({"amount": "Enter whole cents."})
    if amount < settings.USDAI_MIN_PURCHASE or amount > settings.USDAI_MAX_PURCHASE:
        raise ValidationError(
            {"amount": f"Buy between ${settings.USDAI_MIN_PURCHASE:,} and ${settings.USDAI_MAX_PURCHASE:,}."}
        )
    purchase = _purchase_open(
        user=user, amount=amount, gateway=gateway, payment_method="", idempotency_key=idempotency_key
    )
    if purchase.status != UsdaiPurchase.Status.PENDING or purchase.reference:
        return purchase
    try:
        result = _purchase_charge(purchase, gateway)
    except GatewayError as exc:
        if not exc.retryable:
            _purchase_fail(purchase_id=purchase.pk, message=f"The payment service refused the payment: {exc}")
        raise ValidationError({"amount": "The payment service did not answer; try again in a minute."}) from exc
    UsdaiPurchase.objects.filter(pk=purchase.pk, status=UsdaiPurchase.Status.PENDING).update(reference=result.reference)
    purchase.refresh_from_db()
    return purchase


def usdai_purchase_card(*, user: User, purchase_id: int) -> CardPurchase | None:
    """The user's pending card purchase and its PaymentIntent's client secret, read back from
    the gateway (``None`` if it is not the user's, or not waiting for a card any more)."""
    purchase = UsdaiPurchase.objects.filter(pk=purchase_id, user=user, payment_method="").first()
    if purchase is None or purchase.status != UsdaiPurchase.Status.PENDING or not purchase.reference:
        return None
    try:
        result = get_gateway(purchase.gateway).retrieve(reference=purchase.reference)
    except PaymentDeclined:
        return CardPurchase(purchase=purchase, client_secret="", status="requires_payment_method")
    except GatewayError as exc:
        raise ValidationError({"amount": "The payment service did not answer; reload the page."}) from exc
    if result.status not in _AWAITING_BROWSER:
        return None
    return CardPurchase(purchase=purchase, client_secret=result.client_secret, status=result.status)


def usdai_purchase_return(*, user: User, purchase_id: int) -> UsdaiPurchase:
    """The browser is back from ``confirmCardPayment``: read the PaymentIntent and settle the purchase
    as the webhook would (exactly once, whoever is first)."""
    purchase = UsdaiPurchase.objects.filter(pk=purchase_id, user=user).first()
    if purchase is None or not purchase.reference:
        raise ValidationError({"amount": "No such purchase."})
    try:
        result = get_gateway(purchase.gateway).retrieve(reference=purchase.reference)
    except PaymentDeclined as exc:
        _purchase_fail(purchase_id=purchase.pk, message=f"Your card was declined: {exc}")
        raise ValidationError({"amount": f"Your card was declined: {exc}"}) from exc
    except GatewayError as exc:
        raise ValidationError(
            {"amount": "The payment service did not answer; the purchase completes as soon as it does."}
        ) from exc
    if result.status == "succeeded":
        return _purchase_complete(purchase_id=purchase.pk, reference=result.reference, after_failure=True)
    return purchase


def usdai_purchase_paid(*, ident: str, reference: str, amount: Decimal) -> UsdaiPurchase | None:
    """Webhook: a PaymentIntent with ``usdai_purchase`` in its metadata succeeded.

    Completes the purchase exactly once (also one marked failed by an earlier
    attempt: the money was captured, so it is a purchase). An id that names no
    purchase, or an amount that is not the purchase's, changes nothing (logged).
    """
    pk = digits(ident)
    purchase = UsdaiPurchase.objects.filter(pk=pk).first() if pk is not None else None
    if purchase is None:
        logger.warning("payment %s names USDai purchase %r, which does not exist", reference, ident)
        return None
    if amount and amount != purchase.amount:
        logger.error(
            "payment %s of %s does not match USDai purchase %s of %s", reference, amount, ident, purchase.amount
        )
        return None
    return _purchase_complete(purchase_id=purchase.pk, reference=reference, after_failure=True)


def usdai_purchase_failed(*, ident: str, reference: str, message: str) -> None:
    """Webhook: an attempt to pay a purchase failed. A pending purchase is marked failed (a later
    success of the same PaymentIntent, with another card, still completes it)."""
    if (pk := digits(ident)) is None:
        return
    _purchase_fail(purchase_id=pk, reference=reference, message=message or "The payment did not go through.")


def _purchase_settle(
    *, purchase: UsdaiPurchase, result, raise_refusal: bool, now: datetime | None = None
) -> UsdaiPurchase:
    """What the gateway's answer means for a pending purchase: completed, failed, or still pending.

    For the sweep (``raise_refusal`` false), a card purchase (no payment method:
    the buyer confirms it in the browser) whose PaymentIntent still waits for the
    browser stays pending until ``SWEEP_REPLAY_LIMIT``, then fails as abandoned.
    """
    if result.status == "succeeded":
        return _purchase_complete(purchase_id=purchase.pk, reference=result.reference)
    waiting = not purchase.payment_method and result.status in _AWAITING_BROWSER
    if waiting and not raise_refusal and purchase.created_at >= (now or timezone.now()) - SWEEP_REPLAY_LIMIT:
        # Keep the PaymentIntent (a replayed charge found it) so that the wallet page can show it.
        UsdaiPurchase.objects.filter(pk=purchase.pk, status=UsdaiPurchase.Status.PENDING, reference="").update(
            reference=result.reference
        )
        return purchase
    if result.status == "processing":
        # Settles later at the gateway: keep the reference, the sweep reads it back.
        UsdaiPurchase.objects.filter(pk=purchase.pk, status=UsdaiPurchase.Status.PENDING).update(
            reference=result.reference
        )
        purchase.refresh_from_db()
        return purchase
    message = "This card needs a further step; use another card."
    _purchase_fail(purchase_id=purchase.pk, reference=result.reference, message=message)
    if raise_refusal:
        raise ValidationError({"payment_method": message})
    purchase.refresh_from_db()
    return purchase


def _purchase_complete(*, purchase_id: int, reference: str, after_failure: bool = False) -> UsdaiPurchase:
    """Step 3: mark the purchase succeeded, credit the USDai and queue the mint; exactly once.

    The conditional update is the claim: of two callers (the buy and the
    sweep, the webhook and the return page), the second waits on the row and
    then matches nothing. ``after_failure``: the gateway says the money was
    captured, so a purchase marked failed by an earlier attempt is claimed too.
    """
    claimable = [UsdaiPurchase.Status.PENDING]
    if after_failure:
        claimable.append(UsdaiPurchase.Status.FAILED)
    with transaction.atomic():
        won = UsdaiPurchase.objects.filter(pk=purchase_id, status__in=claimable).update(
            status=UsdaiPurchase.Status.SUCCEEDED, reference=reference, failure_message="", completed_at=timezone.now()
        )
        purchase = UsdaiPurchase.objects.select_related("user").get(pk=purchase_id)
        if not won:
            return purchase
        user, amount = purchase.user, purchase.amount
        wallet = wallet_for_user(user=user)
        journal_post(
            key=f"usdai:buy:{purchase.pk}",
            description=f"{user} bought {amount} USDai ({purchase.gateway} {reference})",
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


def _purchase_fail(*, purchase_id: int, message: str, reference: str = "") -> bool:
    """Mark a pending purchase failed (nothing was captured); false if it was settled meanwhile."""
    changes = {"status": UsdaiPurchase.Status.FAILED, "failure_message": message[:300], "completed_at": timezone.now()}
    if reference:
        changes["reference"] = reference
    with transaction.atomic():
        return bool(UsdaiPurchase.objects.filter(pk=purchase_id, status=UsdaiPurchase.Status.PENDING).update(**changes))


def usdai_purchases_sweep(
    *, older_than: timedelta = SWEEP_AFTER, now: datetime | None = None, batch: int = 100
) -> dict[str, int]:
    """Periodic: complete or fail the purchases left pending (a crash or a timeout after step 1).

    A purchase whose PaymentIntent is known is read back (``retrieve``); one
    whose charge never came back is presented again, the same request under
    the same idempotency key, which the gateway answers with the first
    charge's PaymentIntent if there was one (Stripe keeps keys 24 hours; a
    purchase older than ``SWEEP_REPLAY_LIMIT`` without a reference is left
    to an operator, logged, rather than risk a second charge). Then it is
    settled as ``usdai_buy`` would have: exactly once, whoever gets there
    first. Only purchases older than ``older_than`` are swept, so a buy in
    progress finishes on its own. Returns how many succeeded, failed, or are
    still pending.
    """
    now = now or timezone.now()
    done = {"succeeded": 0, "failed": 0, "pending": 0}
    pending = UsdaiPurchase.objects.filter(status=UsdaiPurchase.Status.PENDING, created_at__lt=now - older_than)
    for purchase in pending.order_by("pk")[:batch]:
        try:
            if purchase.reference:
                result = get_gateway(purchase.gateway).retrieve(reference=purchase.reference)
            elif purchase.created_at < now - SWEEP_REPLAY_LIMIT:
                logger.error("USDai purchase %s is pending without a charge reference; check the gateway", purchase.pk)
                done["pending"] += 1
                continue
            else:
                result = _purchase_charge(purchase)
        except PaymentDeclined as exc:
            _purchase_fail(purchase_id=purchase.pk, reference=exc.reference, message=f"Your card was declined: {exc}")
        except GatewayError as exc:
            if not exc.retryable:
                _purchase_fail(purchase_id=purchase.pk, message=f"The payment service refused the payment: {exc}")
            else:
                logger.warning("USDai purchase %s: the gateway did not answer: %s", purchase.pk, exc)
        else:
            _purchase_settle(purchase=purchase, result=result, raise_refusal=False, now=now)
        purchase.refresh_from_db()
        done[purchase.status] += 1
    return done


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
