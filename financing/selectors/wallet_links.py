"""Reads about users' own wallets: the linked address, its operations, its share of the vault.

Frozen dataclasses out. The chain's figures (USDai and sUSDai at the linked
address) are ``None`` when the chain cannot be read, and ``error`` says why.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from accounts.models import User
from core import money
from financing.chain.client import ChainError, address_for, shares, shares_wei, wei_to_usd
from financing.chain.node import contract_addresses, get_chain
from financing.models import LinkedWallet, Wallet, WalletOperation
from financing.selectors.vault import LenderPnl, VaultPosition

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


@dataclass(frozen=True)
class LinkedWalletInfo:
    address: str
    chain_id: int
    linked_at: datetime


def linked_wallet(*, user: User) -> LinkedWalletInfo | None:
    """The user's active link, or None."""
    row = LinkedWallet.objects.filter(user=user, unlinked_at__isnull=True).first()
    return LinkedWalletInfo(address=row.address, chain_id=row.chain_id, linked_at=row.linked_at) if row else None


def platform_addresses() -> set[str]:
    """Addresses whose keys or code are ours: custodial wallets, the operator, the contracts, and
    the zero address (mints). USDai from them is already booked when it moves."""
    ours = set(Wallet.objects.values_list("address", flat=True))
    ours |= {address_for(0), ZERO_ADDRESS, *contract_addresses().values()}
    return ours


@dataclass(frozen=True)
class WalletOperationRow:
    id: int
    kind: str
    kind_label: str
    status: str
    status_label: str
    address: str
    tx_hash: str
    amount: Decimal | None
    shares: Decimal | None
    request_id: int | None
    shares_left: Decimal | None
    paid: Decimal
    failure_message: str
    created_at: datetime
    confirmed_at: datetime | None

    @property
    def cancellable(self) -> bool:
        return (
            self.kind == WalletOperation.Kind.REDEEM
            and self.status == WalletOperation.Status.CONFIRMED
            and bool(self.shares_left)
        )


def _row(op: WalletOperation) -> WalletOperationRow:
    return WalletOperationRow(
        id=op.pk,
        kind=op.kind,
        kind_label=op.get_kind_display(),
        status=op.status,
        status_label=op.get_status_display(),
        address=op.address,
        tx_hash=op.tx_hash,
        amount=op.amount,
        shares=op.shares,
        request_id=op.request_id,
        shares_left=op.shares_left,
        paid=op.paid,
        failure_message=op.failure_message,
        created_at=op.created_at,
        confirmed_at=op.confirmed_at,
    )


def wallet_operations(*, user: User, limit: int = 50) -> list[WalletOperationRow]:
    """The user's own-wallet operations and USDai received from outside, newest first."""
    return [_row(op) for op in WalletOperation.objects.filter(user=user)[:limit]]


def wallet_operation(*, user: User, pk: int) -> WalletOperationRow | None:
    op = WalletOperation.objects.filter(user=user, pk=pk).first()
    return _row(op) if op else None


@dataclass(frozen=True)
class OwnWalletPosition:
    """The sUSDai at the user's linked address and in the queue for it, beside the custodial
    position: ``total_*`` add the two (the vault page's figures)."""

    address: str
    usdai: Decimal | None  # USDai at the linked address
    shares: Decimal | None
    value: Decimal | None
    queued: Decimal  # shares of the linked address waiting in the queue
    queued_value: Decimal | None
    deposited: Decimal  # credited deposits from the linked address
    redeemed: Decimal  # USDai the queue paid to it
    pending: int  # operations still pending
    total_shares: Decimal | None
    total_value: Decimal | None
    total_pnl: Decimal | None
    error: str = ""


def own_wallet_position(*, user: User, position: VaultPosition, pnl: LenderPnl) -> OwnWalletPosition | None:
    """None without a linked wallet."""
    link = linked_wallet(user=user)
    if link is None:
        return None
    ops = WalletOperation.objects.filter(user=user, address=link.address)
    confirmed = ops.filter(status=WalletOperation.Status.CONFIRMED)
    deposited = money.usd(money.sum_of(confirmed.filter(kind=WalletOperation.Kind.DEPOSIT)))
    redeemed = money.usd(money.sum_of(confirmed.filter(kind=WalletOperation.Kind.REDEEM_PAID)))
    queued = money.sum_of(confirmed.filter(kind=WalletOperation.Kind.REDEEM), "shares_left")
    pending = ops.filter(status=WalletOperation.Status.PENDING).count()
    try:
        chain = get_chain()
        usdai = wei_to_usd(chain.call("USDai", "balanceOf", link.address))
        held = chain.call("SUSDai", "balanceOf", link.address)
        value = wei_to_usd(chain.call("SUSDai", "convertToAssets", held)) if held else Decimal(0)
        queued_value = wei_to_usd(chain.call("SUSDai", "convertToAssets", shares_wei(queued))) if queued else Decimal(0)
    except ChainError as exc:
        return OwnWalletPosition(
            link.address, None, None, None, queued, None, deposited, redeemed, pending, None, None, None, str(exc)
        )
    own_value = value + queued_value
    total_shares = None if position.shares is None else position.shares + position.queued + shares(held) + queued
    total_value = None if pnl.value is None else pnl.value + own_value
    total_pnl = None if pnl.pnl is None else pnl.pnl + own_value + redeemed - deposited
    return OwnWalletPosition(
        address=link.address,
        usdai=usdai,
        shares=shares(held),
        value=value,
        queued=queued,
        queued_value=queued_value,
        deposited=deposited,
        redeemed=redeemed,
        pending=pending,
        total_shares=total_shares,
        total_value=total_value,
        total_pnl=total_pnl,
    )
