"""A user's own Ethereum wallet: linking it with Sign-In with Ethereum, and the vault calls
they sign with it in the browser.

Linking (EIP-4361) takes two requests:

1. ``siwe_nonce_issue``: the server builds the whole message (domain = the
   request's host, the address, statement, URI, version 1, the chain's id, a
   random nonce, issued at, expiration ``SIWE_NONCE_TTL_SECONDS`` later),
   stores it, bound to the user, and returns it; the page asks the wallet to
   ``personal_sign`` it;
2. ``wallet_link``: the signed message is parsed strictly and every field
   compared with what was issued (domain, chain id, nonce, address, the text
   itself), the nonce must be unused and unexpired, and the signer recovered
   from the signature must be the address. The nonce is consumed (a
   conditional update: a replay matches nothing) in the transaction that
   writes the link, so it links once or not at all.

One active link per user, an address linked to one user only (partial unique
constraints; a racing second link is an ``IntegrityError`` → field error). A
platform address (a custodial wallet, the operator, a contract) is refused:
its USDai is already the platform's to book.

Signed vault operations: ``wallet_calls`` returns the unsigned transactions
(USDai ``approve`` then SUSDai ``deposit(assets, receiver=linked)``;
``request_redeem(shares)``; ``cancel_redeem(id)``) for the page to send with
``eth_sendTransaction``; the page then posts each hash
(``wallet_operation_submit``), recorded pending. Nothing is booked here: the
chain watcher (``financing.services.chain_watch``) books what the chain did,
once per event. Self-custodied USDai is not the platform's liability
(``usdai_external`` counts it), so a pending row moves no money.

Unlinking (``wallet_unlink``) asks for the password or a TOTP code again; the
view checks it (``accounts.reauth``) before calling the service.

``accounts.LenderProfile.wallet_address`` stays what it was, an address the
lender typed on their profile, unverified and never used to move money; the
verified address is the ``LinkedWallet``.
"""

import re
import secrets
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from core import money
from financing.chain.client import ChainError, checksum, shares_wei, usd_to_wei, wei_to_usd
from financing.chain.node import get_chain
from financing.chain.own_wallets import UnsignedTx, transaction_from, unsigned_call
from financing.chain.siwe import SiweError, SiweMessage, siwe_message, siwe_parse, siwe_signer
from financing.models import LinkedWallet, SiweNonce, WalletOperation
from financing.selectors.wallet_links import platform_addresses
from financing.services.wallets import usdai_amount

STATEMENT = "Link this Ethereum address to your InfraFi account to deposit into sUSDai from your own wallet."
_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_TX_HASH = re.compile(r"0x[0-9a-fA-F]{64}")

NO_LINK = "Link your own wallet first."
CHAIN_DOWN = "The chain is not reachable just now; try again shortly."


def _address(value: str) -> str:
    value = (value or "").strip()
    if not _HEX_ADDRESS.fullmatch(value):
        raise ValidationError({"address": "Enter an Ethereum address: 0x followed by 40 hex digits."})
    digits = value[2:]
    if digits not in (digits.lower(), digits.upper()) and checksum(value) != value:
        raise ValidationError({"address": "The address's EIP-55 checksum is wrong; copy it again."})
    return checksum(value)


def _linkable(*, user: User, address: str) -> None:
    if address in platform_addresses():
        raise ValidationError({"address": "That is an InfraFi address; link a wallet you hold the key of."})
    if LinkedWallet.objects.filter(address=address, unlinked_at__isnull=True).exists():
        raise ValidationError({"address": "This address is already linked to an account."})
    if LinkedWallet.objects.filter(user=user, unlinked_at__isnull=True).exists():
        raise ValidationError({"address": "You already have a linked wallet; unlink it first."})


def _chain_id() -> int:
    try:
        return get_chain().chain_id
    except ChainError as exc:
        raise ValidationError({"address": CHAIN_DOWN}) from exc


def siwe_nonce_issue(*, user: User, address: str, domain: str, uri: str) -> SiweNonce:
    """A fresh EIP-4361 message for ``user`` to sign with ``address`` (stored, single use)."""
    address = _address(address)
    _linkable(user=user, address=address)
    now = timezone.now().replace(microsecond=0)
    message = SiweMessage(
        domain=domain,
        address=address,
        statement=STATEMENT,
        uri=uri,
        chain_id=_chain_id(),
        nonce=secrets.token_hex(16),
        issued_at=now,
        expiration_time=now + timedelta(seconds=settings.SIWE_NONCE_TTL_SECONDS),
    )
    return SiweNonce.objects.create(
        user=user,
        nonce=message.nonce,
        address=address,
        domain=domain,
        chain_id=message.chain_id,
        message=siwe_message(message),
        issued_at=message.issued_at,
        expires_at=message.expiration_time,
    )


def wallet_link(*, user: User, message: str, signature: str, domain: str) -> LinkedWallet:
    """Link the address that signed ``message`` (a message ``siwe_nonce_issue`` gave this user)."""
    try:
        parsed = siwe_parse(message)
    except SiweError as exc:
        raise ValidationError({"message": f"This is not a sign-in message InfraFi issued: {exc}."}) from exc
    issued = SiweNonce.objects.filter(nonce=parsed.nonce, user=user).first()
    if issued is None:
        raise ValidationError({"message": "Unknown sign-in request (its nonce is not one we gave you); start again."})
    if parsed.domain != domain or parsed.domain != issued.domain:
        raise ValidationError({"message": f"This message was issued for another site ({parsed.domain})."})
    if parsed.chain_id != issued.chain_id or parsed.chain_id != _chain_id():
        raise ValidationError({"message": f"This message is for chain {parsed.chain_id}, not InfraFi's chain."})
    if parsed.address != issued.address:
        raise ValidationError({"message": "This message names another address than the one it was issued for."})
    if message.replace("\r\n", "\n") != issued.message:
        raise ValidationError({"message": "The message was changed after it was issued; start again."})
    if issued.used_at is not None:
        raise ValidationError({"message": "This sign-in request was used already; start again."})
    now = timezone.now()
    if now >= issued.expires_at:
        raise ValidationError({"message": "This sign-in request expired; start again."})
    try:
        signer = siwe_signer(issued.message, signature)
    except SiweError as exc:
        raise ValidationError({"signature": f"Not a valid signature: {exc}."}) from exc
    if signer != issued.address:
        raise ValidationError({"signature": f"The signature is from another address ({signer}), not {issued.address}."})
    _linkable(user=user, address=issued.address)
    with transaction.atomic():
        if not SiweNonce.objects.filter(pk=issued.pk, used_at__isnull=True).update(used_at=now):
            raise ValidationError({"message": "This sign-in request was used already; start again."})
        try:
            with transaction.atomic():
                return LinkedWallet.objects.create(
                    user=user,
                    address=issued.address,
                    chain_id=issued.chain_id,
                    proof=issued,
                    signature=signature.strip(),
                    linked_at=now,
                )
        except IntegrityError as exc:  # a racing link of the same user or address
            raise ValidationError({"address": "This address, or another one of yours, was linked meanwhile."}) from exc


def wallet_unlink(*, user: User) -> LinkedWallet:
    """End the user's active link (the caller has checked the password or code again)."""
    with transaction.atomic():
        link = LinkedWallet.objects.filter(user=user, unlinked_at__isnull=True).first()
        if link is None:
            raise ValidationError({"reauth": "You have no linked wallet."})
        LinkedWallet.objects.filter(pk=link.pk, unlinked_at__isnull=True).update(unlinked_at=timezone.now())
        link.refresh_from_db()
        return link


def _active_link(user: User) -> LinkedWallet:
    link = LinkedWallet.objects.filter(user=user, unlinked_at__isnull=True).first()
    if link is None:
        raise ValidationError({"kind": NO_LINK})
    return link


def _plain(value: Decimal) -> str:
    """20 for 20.000000, 20.5 for 20.500000: how a wallet prompt should read."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _shares_amount(value) -> Decimal:
    value = Decimal(value if value is not None else 0)
    if value <= 0 or value != value.quantize(money.SHARE):
        raise ValidationError({"shares": "Enter a positive number of shares (at most 18 decimals)."})
    return value


def wallet_calls(
    *, user: User, kind: str, amount=None, shares_amount=None, request_id: int | None = None
) -> list[UnsignedTx]:
    """The transactions the user's wallet must sign for ``kind`` (deposit, redeem, cancel).

    Checked against the chain first (balance, allowance, the queue entry), so a call that
    would revert is a field error here, not a failed transaction later."""
    link = _active_link(user)
    try:
        chain = get_chain()
        if kind == WalletOperation.Kind.DEPOSIT:
            amount = usdai_amount(amount if amount is not None else 0)
            wei = usd_to_wei(amount)
            held = chain.call("USDai", "balanceOf", link.address)
            if held < wei:
                raise ValidationError({"amount": f"Your wallet holds {wei_to_usd(held):,.2f} USDai."})
            calls = []
            if chain.call("USDai", "allowance", link.address, chain.addresses["SUSDai"]) < wei:
                calls.append(
                    unsigned_call(
                        chain,
                        sender=link.address,
                        contract="USDai",
                        function="approve",
                        args=[chain.addresses["SUSDai"], wei],
                        label=f"Allow the vault to take {_plain(amount)} USDai",
                    )
                )
            calls.append(
                unsigned_call(
                    chain,
                    sender=link.address,
                    contract="SUSDai",
                    function="deposit",
                    args=[wei, link.address],
                    label=f"Deposit {_plain(amount)} USDai",
                )
            )
            return calls
        if kind == WalletOperation.Kind.REDEEM:
            wanted = _shares_amount(shares_amount)
            held = chain.call("SUSDai", "balanceOf", link.address)
            if shares_wei(wanted) > held:
                raise ValidationError({"shares": f"Your wallet holds {Decimal(held) * money.SHARE:,.6f} sUSDai."})
            if wanted < settings.VAULT_MIN_REDEMPTION and shares_wei(wanted) != held:
                raise ValidationError(
                    {"shares": f"The smallest redemption is {settings.VAULT_MIN_REDEMPTION} sUSDai, or all you hold."}
                )
            return [
                unsigned_call(
                    chain,
                    sender=link.address,
                    contract="SUSDai",
                    function="request_redeem",
                    args=[shares_wei(wanted)],
                    label=f"Queue {_plain(wanted)} sUSDai for redemption",
                )
            ]
        if kind == WalletOperation.Kind.CANCEL:
            queued = WalletOperation.objects.filter(
                user=user,
                address=link.address,
                kind=WalletOperation.Kind.REDEEM,
                status=WalletOperation.Status.CONFIRMED,
                request_id=request_id,
                shares_left__gt=0,
            ).exists()
            if request_id is None or not queued:
                raise ValidationError({"request_id": "That is not one of your wallet's queued redemptions."})
            return [
                unsigned_call(
                    chain,
                    sender=link.address,
                    contract="SUSDai",
                    function="cancel_redeem",
                    args=[request_id],
                    label=f"Cancel redemption #{request_id}",
                )
            ]
    except ChainError as exc:
        raise ValidationError({"kind": CHAIN_DOWN}) from exc
    raise ValidationError({"kind": "Choose deposit, redeem or cancel."})


SUBMITTABLE = (WalletOperation.Kind.DEPOSIT, WalletOperation.Kind.REDEEM, WalletOperation.Kind.CANCEL)


def wallet_operation_submit(
    *, user: User, kind: str, tx_hash: str, amount=None, shares_amount=None, request_id: int | None = None
) -> WalletOperation:
    """Record a transaction the user's wallet sent, pending until the watcher sees it confirmed.

    The same hash again returns the same row. A hash the node knows must come from the
    linked address (one it does not know yet is recorded: wallets broadcast through their
    own nodes)."""
    if kind not in SUBMITTABLE:
        raise ValidationError({"kind": "Choose deposit, redeem or cancel."})
    tx_hash = (tx_hash or "").strip().lower()
    if not _TX_HASH.fullmatch(tx_hash):
        raise ValidationError({"tx_hash": "Enter a transaction hash: 0x followed by 64 hex digits."})
    link = _active_link(user)
    existing = WalletOperation.objects.filter(tx_hash=tx_hash, submitted=True).first()
    if existing is not None:
        if existing.user_id != user.pk:
            raise ValidationError({"tx_hash": "That transaction is recorded for another account."})
        return existing
    try:
        sender = transaction_from(get_chain(), tx_hash)  # no transaction open: a network call
    except ChainError as exc:
        raise ValidationError({"tx_hash": CHAIN_DOWN}) from exc
    if sender is not None and sender != link.address:
        raise ValidationError({"tx_hash": f"That transaction was sent from {sender}, not your linked wallet."})
    seen = WalletOperation.objects.filter(user=user, tx_hash=tx_hash, kind=kind, submitted=False).first()
    if seen is not None:  # the watcher credited it before the page reported it
        return seen
    fields = {"user": user, "address": link.address, "kind": kind}
    if kind == WalletOperation.Kind.DEPOSIT and amount is not None:
        fields["amount"] = usdai_amount(amount)
    if kind == WalletOperation.Kind.REDEEM and shares_amount is not None:
        fields["shares"] = _shares_amount(shares_amount)
    if kind == WalletOperation.Kind.CANCEL:
        fields["request_id"] = request_id
    try:
        with transaction.atomic():
            return WalletOperation.objects.create(tx_hash=tx_hash, submitted=True, **fields)
    except IntegrityError:  # the same hash posted twice at once
        return WalletOperation.objects.get(tx_hash=tx_hash, submitted=True)
