"""A user's money history: every purchase, payment, refund, send, deposit and
redemption (and, for an owner company's members, its payouts), newest first, each with the state it is really in.

Nothing is shown as done before it is: a card payment is pending until the
gateway confirms it, anything that moves USDai or sUSDai is pending until its
chain transaction is confirmed (``ChainOp.Status.CONFIRMED``: its block is
``CHAIN_CONFIRMATIONS`` deep), and a failure says so with its reason. A deposit
reads "pending" until its receipt, never "deposited".

Each kind is read with one bounded query (``per_kind`` rows, newest first), so
the page costs the same however long the history is; the rows are merged and
cut to ``limit``. Amounts are signed from the user's side: money or tokens in
are positive, out negative, in the row's ``unit``.
"""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from accounts.models import User
from financing.chain.client import wei_to_usd
from financing.models import ChainOp, Payout, Redemption, UsdaiPurchase, VaultDeposit, Wallet, WalletOperation
from marketplace.models import Payment, Refund

PENDING, CONFIRMED, FAILED = "pending", "confirmed", "failed"


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    kind: str  # purchase, payment, refund, send, deposit, redemption, received, payout
    description: str
    amount: Decimal  # signed: + to the user, − from the user
    unit: str  # "USD", "USDai" or "sUSDai"
    state: str  # PENDING, CONFIRMED or FAILED
    detail: str  # what the state means here ("waiting for the chain", the failure's reason...)
    reference: str = ""  # the gateway's payment or refund id, or the chain transaction hash


def _chain_state(op: ChainOp | None, *, done: str) -> tuple[str, str, str]:
    """(state, detail, tx hash) of something that is done once ``op`` is confirmed on chain."""
    if op is None:
        return PENDING, "waiting for the chain", ""
    if op.status == ChainOp.Status.CONFIRMED:
        return CONFIRMED, done, op.tx_hash
    if op.status == ChainOp.Status.FAILED:
        return FAILED, "the chain transaction failed; operations have been alerted", op.tx_hash
    if op.status == ChainOp.Status.MINED:
        return PENDING, "mined, waiting for confirmations", op.tx_hash
    return PENDING, "waiting for the chain", op.tx_hash


def _ops(keys: list[str]) -> dict[str, ChainOp]:
    return {op.key: op for op in ChainOp.objects.filter(key__in=keys)} if keys else {}


def _purchases(user: User, n: int) -> list[HistoryEntry]:
    rows = list(UsdaiPurchase.objects.filter(user=user).order_by("-created_at", "-pk")[:n])
    mints = _ops([f"usdai:mint:{p.pk}" for p in rows if p.status == UsdaiPurchase.Status.SUCCEEDED])
    out = []
    for p in rows:
        how = f"{p.gateway}{' (test payment)' if p.is_test else ''}"
        if p.status == UsdaiPurchase.Status.PENDING:
            state, detail, ref = PENDING, "waiting for the payment to be confirmed", p.reference
        elif p.status == UsdaiPurchase.Status.FAILED:
            state, detail, ref = FAILED, p.failure_message or "the payment did not go through", p.reference
        else:
            state, detail, tx = _chain_state(mints.get(f"usdai:mint:{p.pk}"), done="USDai in your wallet")
            if state == PENDING:
                detail = f"paid; USDai {detail}"
            ref = tx or p.reference
        out.append(
            HistoryEntry(p.created_at, "purchase", f"Bought USDai by {how}", p.amount, "USDai", state, detail, ref)
        )
    return out


def _payments(user: User, n: int) -> list[HistoryEntry]:
    rows = list(
        Payment.objects.filter(booking__renter=user).select_related("booking").order_by("-created_at", "-pk")[:n]
    )
    burns = _ops([f"usdai:burn:payment:{p.pk}" for p in rows if p.gateway == "usdai"])
    out = []
    for p in rows:
        what = f"Paid booking {str(p.booking.public_id)[:8]}"
        unit = "USDai" if p.gateway == "usdai" else "USD"
        if p.status == Payment.Status.PENDING:
            state, detail, ref = PENDING, "waiting for the card network to confirm", p.reference
        elif p.status == Payment.Status.FAILED:
            state, detail, ref = FAILED, p.failure_message or "the payment did not go through", p.reference
        elif p.gateway == "usdai":
            state, detail, ref = _chain_state(burns.get(f"usdai:burn:payment:{p.pk}"), done="paid from your USDai")
            if state == PENDING:
                detail = f"booking paid; the USDai leaves your wallet on chain: {detail}"
        else:
            state, detail, ref = CONFIRMED, f"paid by {p.gateway}{' (test payment)' if p.is_test else ''}", p.reference
        out.append(HistoryEntry(p.created_at, "payment", what, -p.amount, unit, state, detail, ref))
    return out


def _refunds(user: User, n: int) -> list[HistoryEntry]:
    rows = list(
        Refund.objects.filter(booking__renter=user)
        .select_related("booking", "payment")
        .order_by("-created_at", "-pk")[:n]
    )
    mints = _ops([f"usdai:mint:refund:{r.pk}" for r in rows if r.payment.gateway == "usdai"])
    out = []
    for r in rows:
        what = f"Refund for booking {str(r.booking.public_id)[:8]} ({r.get_reason_display().lower()})"
        unit = "USDai" if r.payment.gateway == "usdai" else "USD"
        if r.payment.gateway == "usdai":
            state, detail, ref = _chain_state(mints.get(f"usdai:mint:refund:{r.pk}"), done="back in your USDai")
        elif r.status == Refund.Status.SUCCEEDED:
            state, detail, ref = CONFIRMED, "refunded to your card", r.reference
        elif r.status == Refund.Status.FAILED:
            state, detail, ref = FAILED, r.failure_message or "the refund was refused; we are retrying", r.reference
        else:
            state, detail, ref = PENDING, "waiting for the card network to confirm", r.reference
        out.append(HistoryEntry(r.created_at, "refund", what, r.amount, unit, state, detail, ref))
    return out


def _sends(wallet: Wallet | None, n: int) -> list[HistoryEntry]:
    if wallet is None:
        return []
    rows = ChainOp.objects.filter(key__startswith="usdai:withdraw:", sender=wallet.index).order_by("-created_at", "-pk")
    out = []
    for op in rows[:n]:
        address, wei = op.args[0], int(op.args[1])
        state, detail, ref = _chain_state(op, done="sent")
        out.append(
            HistoryEntry(
                op.created_at, "send", f"Sent USDai to {address}", -wei_to_usd(wei), "USDai", state, detail, ref
            )
        )
    return out


def _deposits(user: User, n: int) -> list[HistoryEntry]:
    out = []
    for d in VaultDeposit.objects.filter(user=user).select_related("op").order_by("-created_at", "-pk")[:n]:
        state, detail, ref = _chain_state(d.op, done="deposited")
        if state == CONFIRMED and d.shares is not None:
            detail = f"deposited for {d.shares:.6f} sUSDai"
        out.append(
            HistoryEntry(
                d.created_at, "deposit", "Deposit into the sUSDai vault", -d.amount, "USDai", state, detail, ref
            )
        )
    return out


_REDEMPTION_DETAIL = {
    Redemption.Status.REQUESTED: (PENDING, "request on its way to the chain"),
    Redemption.Status.QUEUED: (PENDING, "queued; paid first in, first out"),
    Redemption.Status.CANCELLING: (PENDING, "cancelling; the shares come back once the chain confirms"),
    Redemption.Status.CANCELLED: (CONFIRMED, "cancelled; the shares are back in your wallet"),
    Redemption.Status.PAID: (CONFIRMED, "paid"),
}


def _redemptions(user: User, n: int) -> list[HistoryEntry]:
    out = []
    for r in Redemption.objects.filter(user=user).select_related("op", "cancel_op").order_by("-created_at", "-pk")[:n]:
        state, detail = _REDEMPTION_DETAIL[Redemption.Status(r.status)]
        if r.status == Redemption.Status.REQUESTED and r.op.status == ChainOp.Status.FAILED:
            state, detail = FAILED, "the request failed on chain; operations have been alerted"
        if r.paid and r.status != Redemption.Status.PAID:
            detail += f" ({r.paid:,.2f} USDai paid so far)"
        what = f"Redemption of {r.shares:.6f} sUSDai"
        amount, unit = (r.paid, "USDai") if r.paid else (-r.shares, "sUSDai")
        tx = (r.cancel_op.tx_hash if r.cancel_op else "") or r.op.tx_hash
        out.append(HistoryEntry(r.created_at, "redemption", what, amount, unit, state, detail, tx))
    return out


_OWN = {
    # kind: (description, sign of the amount or shares for the user, unit, done)
    WalletOperation.Kind.DEPOSIT: ("Deposit into the sUSDai vault from {address}", -1, "USDai", "credited"),
    WalletOperation.Kind.REDEEM: ("Redemption request from {address}", -1, "sUSDai", "queued on chain"),
    WalletOperation.Kind.CANCEL: ("Redemption cancelled at {address}", 1, "sUSDai", "the shares are back"),
    WalletOperation.Kind.REDEEM_PAID: ("Redemption paid to {address}", 1, "USDai", "paid"),
    WalletOperation.Kind.RECEIVED: ("USDai received at {address}", 1, "USDai", "credited"),
}


def _own_wallet(user: User, n: int) -> list[HistoryEntry]:
    """What the user's own (linked) wallet did in the vault, and USDai received from outside:
    pending from the transaction the page posted until the watcher sees it in a confirmed block."""
    out = []
    for op in WalletOperation.objects.filter(user=user).order_by("-created_at", "-pk")[:n]:
        description, sign, unit, done = _OWN[WalletOperation.Kind(op.kind)]
        quantity = op.shares if unit == "sUSDai" else op.amount
        if op.status == WalletOperation.Status.CONFIRMED:
            state, detail = CONFIRMED, done
        elif op.status == WalletOperation.Status.FAILED:
            state, detail = FAILED, op.failure_message or "the transaction failed on chain"
        else:
            state, detail = PENDING, "waiting for the chain"
        out.append(
            HistoryEntry(
                op.created_at,
                op.kind if op.kind in ("deposit", "received") else "redemption",
                description.format(address=op.address or "your wallet"),
                sign * (quantity or Decimal(0)),
                unit,
                state,
                detail,
                op.tx_hash,
            )
        )
    return out


def _payouts(user: User, n: int) -> list[HistoryEntry]:
    membership = getattr(user, "owner_membership", None)
    if membership is None:
        return []
    rows = Payout.objects.filter(company_id=membership.company_id).select_related("op", "run")
    out = []
    for p in rows.order_by("-created_at", "-pk")[:n]:
        period = f"{p.run.period_start:%d %b} to {p.run.period_end:%d %b %Y}"
        what = f"Payout to {p.company} for {period} ({p.get_rail_display()})"
        if p.status == Payout.Status.CONFIRMED:
            state, detail = CONFIRMED, "paid" if p.rail == Payout.Rail.USDAI else "sent to the bank"
        elif p.status in (Payout.Status.SENT, Payout.Status.PENDING):
            if p.rail == Payout.Rail.USDAI:
                state, detail, _ = _chain_state(p.op, done="paid")
                detail = f"USDai {detail}" if state == PENDING else detail
            else:
                state, detail = PENDING, "in the bank transfer file, waiting for the bank"
        elif p.status == Payout.Status.FAILED:
            state, detail = FAILED, p.reason
        else:  # withheld or carried: nothing moved
            state, detail = PENDING, p.reason
        ref = (p.op.tx_hash if p.op else "") or p.end_to_end_id
        amount = p.amount if p.status in Payout.PAID else Decimal(0)
        out.append(
            HistoryEntry(
                p.created_at, "payout", what, amount, "USDai" if p.rail == "usdai" else "USD", state, detail, ref
            )
        )
    return out


def wallet_history(*, user: User, limit: int = 100, per_kind: int = 100) -> list[HistoryEntry]:
    """The user's history, newest first: at most ``limit`` rows, each kind read at most ``per_kind`` deep."""
    wallet = Wallet.objects.filter(user=user).first()
    rows = [
        *_purchases(user, per_kind),
        *_payments(user, per_kind),
        *_refunds(user, per_kind),
        *_sends(wallet, per_kind),
        *_deposits(user, per_kind),
        *_redemptions(user, per_kind),
        *_own_wallet(user, per_kind),
        *_payouts(user, per_kind),
    ]
    rows.sort(key=lambda e: e.at, reverse=True)
    return rows[:limit]
