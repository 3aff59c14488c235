"""The chain watcher: what happened on chain that the outbox did not send (periodic).

Users' own wallets move USDai and sUSDai without us: a deposit signed in the
browser, a redemption request or its cancellation, USDai sent from outside to
a linked or custodial address, and the queue paying a linked address. The
watcher reads our contracts' events block by block from a cursor
(``ChainCursor``), only up to the last confirmed block (the head less
``CHAIN_CONFIRMATIONS`` - 1: a reorganisation deeper than that is out of
scope, as for the outbox), and applies each relevant event exactly once:
a ``ChainEvent`` row unique on ``tx_hash:log_index`` is inserted first, in
the transaction that books it; an ``IntegrityError`` means it was applied
already (a second watcher, a re-read range), and nothing else happens.

Ledger (USD, 6 decimals). ``usdai_external`` is USDai held outside the
platform (not its liability to any one user), so:

- SUSDai ``Deposit`` whose sender is not ours (a linked or any outside
  address): Dr ``usdai_external``, Cr sUSDai holders; Dr vault cash, Cr
  gateway clearing: the custodial deposit's entry with ``usdai_external`` in
  place of ``usdai:<user>``. The shares are the depositor's, on chain;
- ``RedeemServiced`` to an owner that is not a custodial wallet (those are
  booked by the outbox's receipt handler): the reverse, Dr sUSDai holders, Cr
  ``usdai_external``; Dr gateway clearing, Cr vault cash (at the micro-dollar
  rounded down; the reconciler counts the wei remainder as it does for
  custodial payouts);
- USDai ``Transfer`` from an address that is not ours to a custodial wallet:
  Dr ``usdai_external``, Cr ``usdai:<user>`` (the user's balance);
- to a linked address, ``RedeemRequested`` and ``RedeemCancelled``: no money
  moves in the books (the shares and the USDai stay outside); the user's
  operation row records them.

So after the watcher has run, ``chain_reconcile`` finds USDai supply, vault
idle and every custodial wallet equal to the books. A pending operation the
page posted (``wallet_operation_submit``) is credited by its event; one whose
receipt says it reverted (``status=0``) is failed with the reason, nothing
booked.

Deposits of sub-micro-dollar amounts (not offered by our pages) would leave
the vault's idle a few wei above the books.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import User
from financing.chain.client import Chain, ChainError, shares, wei_to_usd
from financing.chain.node import get_chain
from financing.chain.own_wallets import ChainLog, contract_logs, transaction_from
from financing.models import ChainCursor, ChainEvent, LinkedWallet, Wallet, WalletOperation
from financing.selectors.wallet_links import platform_addresses
from financing.services.ledger import Line, journal_post, system_account
from financing.services.wallets import usdai_account

WATCHED = ("USDai", "SUSDai")
# A posted hash the node still does not know after this long was dropped (or replaced).
FORGOTTEN_AFTER = timedelta(hours=1)
FORGOTTEN = "The chain does not know this transaction (dropped or replaced); nothing was credited."


@dataclass(frozen=True)
class WatchReport:
    from_block: int
    to_block: int  # the last block read (from_block - 1 when nothing was)
    applied: int  # events applied now
    failed: int  # pending operations found reverted
    error: str = ""


@dataclass(frozen=True)
class _Addresses:
    ours: set[str]
    custodial: dict[str, int]  # address → user id
    linked: dict[str, int]  # address → user id (the latest link of the address)


def _addresses() -> _Addresses:
    linked: dict[str, int] = {}
    for address, user_id in LinkedWallet.objects.order_by("linked_at").values_list("address", "user_id"):
        linked[address] = user_id
    custodial = dict(Wallet.objects.filter(user__isnull=False).values_list("address", "user_id"))
    return _Addresses(ours=platform_addresses(), custodial=custodial, linked=linked)


def chain_watch(*, max_batches: int = 20) -> WatchReport:
    """Read and apply the confirmed blocks since the cursor; then settle pending operations."""
    try:
        chain = get_chain()
        head = chain.head()
    except ChainError as exc:
        return WatchReport(0, -1, 0, 0, error=str(exc))
    safe = head - max(settings.CHAIN_CONFIRMATIONS, 1) + 1
    cursor = ChainCursor.objects.filter(chain_id=chain.chain_id).first()
    start = settings.CHAIN_WATCH_START_BLOCK if cursor is None else cursor.block + 1
    if cursor is not None and cursor.block > head:  # a chain reset under the same id: read it again
        start = settings.CHAIN_WATCH_START_BLOCK
    first, applied, error = start, 0, ""
    addresses = _addresses()
    for _ in range(max_batches):
        if start > safe:
            break
        end = min(safe, start + settings.CHAIN_WATCH_BATCH_BLOCKS - 1)
        try:
            logs = contract_logs(chain, from_block=start, to_block=end, names=WATCHED)
        except ChainError as exc:
            error = str(exc)
            break
        for log in logs:
            applied += _apply(chain.chain_id, log, addresses)
        ChainCursor.objects.update_or_create(chain_id=chain.chain_id, defaults={"block": end})
        start = end + 1
    failed = _settle_pending(chain, safe=min(safe, start - 1))
    return WatchReport(first, start - 1, applied, failed, error=error)


def _apply(chain_id: int, log: ChainLog, addresses: _Addresses) -> int:
    """Apply one log if it concerns us; 1 if it was applied now, 0 if not ours or applied before."""
    effect = _effect(log, addresses)
    if effect is None:
        return 0
    user_id, lines, description = effect
    key = f"{log.tx_hash}:{log.log_index}"
    with transaction.atomic():
        try:
            with transaction.atomic():
                event = ChainEvent.objects.create(
                    key=key,
                    chain_id=chain_id,
                    block_number=log.block_number,
                    tx_hash=log.tx_hash,
                    log_index=log.log_index,
                    contract=log.contract,
                    event=log.event,
                    args=log.args,
                    user_id=user_id,
                )
        except IntegrityError:
            return 0  # applied already
        if lines:
            event.entry = journal_post(key=f"chain:{key}", description=description, lines=lines)
            event.save(update_fields=["entry"])
        if user_id is not None:
            _record_operation(event, log, user_id)
    return 1


def _effect(log: ChainLog, a: _Addresses) -> tuple[int | None, list[Line], str] | None:
    """(user id, ledger lines, description) for a relevant log; None for one that is not ours to apply."""
    args = log.args
    if log.contract == "SUSDai" and log.event == "Deposit":
        if args["sender"] in a.ours:
            return None  # a custodial deposit: booked by vault_deposit
        amount = wei_to_usd(int(args["assets"]))
        owner = args["owner"]
        user_id = a.linked.get(owner) or a.custodial.get(owner)
        lines = [
            Line(system_account("usdai_external"), amount, "deposit"),
            Line(system_account("susdai_holders"), -amount, "deposit"),
            Line(system_account("vault_cash"), amount, "deposit"),
            Line(system_account("gateway_clearing"), -amount, "deposit"),
        ]
        return user_id, lines if amount else [], f"{args['sender']} deposited {amount} USDai into sUSDai for {owner}"
    if log.contract == "SUSDai" and log.event == "RedeemServiced":
        owner = args["owner"]
        if owner in a.custodial:
            return None  # booked by the outbox's receipt handler
        amount = wei_to_usd(int(args["assets"]))
        lines = [
            Line(system_account("susdai_holders"), amount, "redemption"),
            Line(system_account("usdai_external"), -amount, "redemption"),
            Line(system_account("gateway_clearing"), amount, "redemption"),
            Line(system_account("vault_cash"), -amount, "redemption"),
        ]
        return a.linked.get(owner), lines if amount else [], f"sUSDai redemption #{args['id']} paid {amount} to {owner}"
    if log.contract == "SUSDai" and log.event in ("RedeemRequested", "RedeemCancelled"):
        owner = args["owner"]
        if owner not in a.linked:
            return None
        return a.linked[owner], [], ""
    if log.contract == "USDai" and log.event == "Transfer":
        sender, receiver = args["sender"], args["receiver"]
        if sender in a.ours:
            return None
        if receiver in a.custodial:
            amount = wei_to_usd(int(args["value"]))
            user_id = a.custodial[receiver]
            user = User.objects.get(pk=user_id)
            lines = [
                Line(system_account("usdai_external"), amount, "usdai_received"),
                Line(usdai_account(user), -amount, "usdai_received"),
            ]
            return user_id, lines if amount else [], f"{user} received {amount} USDai from {sender}"
        if receiver in a.linked:
            return a.linked[receiver], [], ""
    return None


_KIND = {
    "Deposit": WalletOperation.Kind.DEPOSIT,
    "RedeemRequested": WalletOperation.Kind.REDEEM,
    "RedeemCancelled": WalletOperation.Kind.CANCEL,
    "RedeemServiced": WalletOperation.Kind.REDEEM_PAID,
    "Transfer": WalletOperation.Kind.RECEIVED,
}


def _record_operation(event: ChainEvent, log: ChainLog, user_id: int) -> None:
    """The user's operation row for an applied event: the pending row the page posted for the
    same transaction, now credited, or a new one (sent from elsewhere)."""
    args, kind, now = log.args, _KIND[log.event], timezone.now()
    fields: dict = {"status": WalletOperation.Status.CONFIRMED, "confirmed_at": now, "event": event}
    if log.event == "Deposit":
        fields |= {
            "address": args["owner"],
            "amount": wei_to_usd(int(args["assets"])),
            "shares": shares(int(args["shares"])),
        }
    elif log.event == "RedeemRequested":
        requested = shares(int(args["shares"]))
        fields |= {
            "address": args["owner"],
            "shares": requested,
            "shares_left": requested,
            "request_id": int(args["id"]),
        }
    elif log.event == "RedeemCancelled":
        fields |= {"address": args["owner"], "shares": shares(int(args["shares"])), "request_id": int(args["id"])}
        WalletOperation.objects.filter(
            user_id=user_id, kind=WalletOperation.Kind.REDEEM, request_id=int(args["id"])
        ).update(shares_left=0)
    elif log.event == "RedeemServiced":
        paid = wei_to_usd(int(args["assets"]))
        fields |= {
            "address": args["owner"],
            "amount": paid,
            "shares": shares(int(args["shares"])),
            "request_id": int(args["id"]),
        }
        WalletOperation.objects.filter(
            user_id=user_id, kind=WalletOperation.Kind.REDEEM, request_id=int(args["id"])
        ).update(shares_left=shares(int(args["remaining_shares"])), paid=F("paid") + paid)
    else:  # USDai received
        fields |= {"address": args["receiver"], "amount": wei_to_usd(int(args["value"]))}
    pending = WalletOperation.objects.filter(
        user_id=user_id, tx_hash=log.tx_hash, kind=kind, submitted=True, event__isnull=True
    ).first()
    if pending is not None:
        WalletOperation.objects.filter(pk=pending.pk).update(failure_message="", **fields)
    else:
        WalletOperation.objects.create(user_id=user_id, kind=kind, tx_hash=log.tx_hash, **fields)


def _unknown(chain: Chain, tx_hash: str) -> bool:
    try:
        return transaction_from(chain, tx_hash) is None
    except ChainError:
        return False


def _settle_pending(chain: Chain, *, safe: int) -> int:
    """Fail the pending rows whose transaction reverted (or moved nothing of theirs) in a block
    the watcher has read, or that the node has not known for ``FORGOTTEN_AFTER`` (dropped, or
    replaced at its nonce by another); the others wait. Returns how many failed."""
    failed = 0
    for op in WalletOperation.objects.filter(status=WalletOperation.Status.PENDING, submitted=True).order_by("pk"):
        try:
            receipt = chain.receipt(op.tx_hash, timeout=0)
        except ChainError:
            break
        if receipt is None:
            if op.created_at < timezone.now() - FORGOTTEN_AFTER and _unknown(chain, op.tx_hash):
                failed += WalletOperation.objects.filter(pk=op.pk, status=WalletOperation.Status.PENDING).update(
                    status=WalletOperation.Status.FAILED,
                    failure_message=FORGOTTEN,
                    confirmed_at=timezone.now(),
                )
            continue
        if receipt.block_number > safe:
            continue
        if receipt.ok:
            message = "The transaction was mined but did not move anything of yours in the vault."
        else:
            message = f"The transaction reverted on chain (block {receipt.block_number}); nothing was credited."
        failed += WalletOperation.objects.filter(pk=op.pk, status=WalletOperation.Status.PENDING).update(
            status=WalletOperation.Status.FAILED, failure_message=message, confirmed_at=timezone.now()
        )
    return failed
