"""The transactional outbox that keeps the chain in step with the ledger.

A service that changes the books and needs a chain effect calls
``chainop_enqueue`` inside its own transaction: the row commits with the
ledger change or not at all. ``chain_send`` (beat, every few seconds) sends
rows strictly in id order:

1. sign once: estimate gas, take the sender's next nonce, sign, and store the
   nonce, raw bytes and hash (committed) before anything is broadcast;
2. broadcast the stored bytes (again, after a failure: the same transaction,
   so a row is never sent twice), then wait for the receipt;
3. confirm: store the receipt, then run the row's handler in the same
   transaction (a deposit's shares, a redemption's queue id, a payout's
   journal entry keyed by ``tx_hash:log_index``).

Handlers: the calls whose receipts the books must record are named here
(``RECORDED_CALLS``); their handlers live in ``financing.chain.receipts``,
registered by ``FinancingConfig.ready()`` in every process. A receipt of a
recorded call whose handler is missing is not confirmed: the confirmation
rolls back, the operator is alerted, and the row stays signed and retries
with backoff (re-broadcasting its stored bytes is idempotent), so nothing is
lost and nothing is sent twice.

The RPC down or a timeout: the row waits with exponential backoff and the
rows behind it wait too (order matters: a wallet's gas funding comes before
its approvals). A call that reverts is marked failed, the operator is
alerted, and sending goes on. One sender at a time: on PostgreSQL an
advisory lock.

A reset chain (a JSON-RPC node restarted with the same chain id: a new
block 0, no code at the recorded addresses) halts sending before anything is
signed: one ``chain_reset`` alert, and every row waits. Recovery:
``manage.py chain_recover`` (``chain_recover`` below): deploy afresh, replay the
confirmed rows, resume.

Depth: a receipt in block N is recorded as mined and counts (its handler runs)
only once the head is N + ``CHAIN_CONFIRMATIONS`` - 1 and block N is still the
one it was in; a mined row whose receipt moves or vanishes goes back to signed
and its bytes are broadcast again (same nonce), with a ``reorg`` alert. A
signed row not mined after ``CHAIN_FEE_BUMP_AFTER`` seconds is re-signed at its
nonce with both fees +12.5 %, keeping every earlier hash (whichever is mined is
the row's), up to ``CHAIN_MAX_FEE_GWEI`` (then one ``stuck`` alert).

The chain itself comes from ``financing.chain.node.get_chain`` (the embedded
chain is rebuilt there from the rows this outbox mined).
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import ROUND_CEILING, Decimal

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from financing.chain.client import Chain, ChainError, Reverted
from financing.chain.deploy import deploy
from financing.chain.node import chain_applied, chain_reset_reason, get_chain
from financing.models import ChainAlert, ChainDeployment, ChainOp

log = logging.getLogger(__name__)

_SEND_LOCK_ID = 0x1F0C4A1
# The calls whose receipts the books record (shares minted, a queue id, USDai paid out).
RECORDED_CALLS = frozenset({"SUSDai.deposit", "SUSDai.request_redeem", "SUSDai.cancel_redeem", "SUSDai.service"})
HANDLERS: dict[str, Callable[[ChainOp, list[dict]], None]] = {}  # "Contract.function" -> handler(op, events)


class MissingHandler(ChainError):
    """A receipt the books must record arrived and no handler is registered for it."""

    def __init__(self, name: str):
        super().__init__(f"no receipt handler registered for {name}", retryable=True)


def handles(name: str):
    """Register the receipt handler of a recorded call (``financing.chain.receipts``)."""
    if name not in RECORDED_CALLS:
        raise ValueError(f"{name} is not a recorded call; add it to RECORDED_CALLS")

    def register(fn):
        HANDLERS[name] = fn
        return fn

    return register


def chainop_enqueue(
    *, key: str, contract: str = "", function: str = "", args=(), sender: int = 0, to: str = "", value: int = 0
) -> ChainOp:
    """Queue one transaction; call inside the transaction of the change it mirrors.
    Idempotent by key: the row already queued under ``key`` is returned."""
    existing = ChainOp.objects.filter(key=key).first()
    if existing is not None:
        return existing
    args = [str(a) if isinstance(a, int) and not isinstance(a, bool) else a for a in args]
    try:
        with transaction.atomic():
            return ChainOp.objects.create(
                key=key, contract=contract, function=function, args=args, sender=sender, to=to, value=str(value)
            )
    except IntegrityError:
        return ChainOp.objects.get(key=key)


def _decode_args(op: ChainOp) -> list:
    out = []
    for value in op.args:
        if isinstance(value, str) and value.lstrip("-").isdigit():
            out.append(int(value))
        else:
            out.append(value)
    return out


# --- Sending -------------------------------------------------------------------------


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(settings.CHAIN_RETRY_BASE_SECONDS * 2 ** (attempts - 1), 3600))


def _alert(kind: str, message: str, op: ChainOp | None = None) -> None:
    log.error("chain %s: %s", kind, message)
    ChainAlert.objects.create(kind=kind, message=message[:500], op=op)


class _SendLock:
    """One sender at a time (PostgreSQL advisory lock; SQLite runs one worker)."""

    def __enter__(self) -> bool:
        if connection.vendor != "postgresql":
            return True
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [_SEND_LOCK_ID])
            self.held = cursor.fetchone()[0]
        return self.held

    def __exit__(self, *exc) -> None:
        if connection.vendor == "postgresql" and self.held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [_SEND_LOCK_ID])


def chain_send(*, max_ops: int = 200, now=None) -> dict[str, int | str]:
    """Send queued rows in order until one must wait; returns counts (and ``halted``
    with the reason when the chain is not the recorded deployment or is being recovered).
    A row mined but not yet ``CHAIN_CONFIRMATIONS`` deep counts as waiting and does not
    hold back the rows behind it."""
    summary: dict[str, int | str] = {"confirmed": 0, "failed": 0, "waiting": 0}
    now = now or timezone.now()
    with _SendLock() as held:
        if not held:
            return summary
        # The head row's backoff holds while the chain is unreachable too: no connection
        # attempt (and no counted try) before it is due.
        head = ChainOp.objects.filter(status__in=ChainOp.IN_FLIGHT).order_by("pk").first()
        if head is not None and head.next_attempt_at and head.next_attempt_at > now:
            summary["waiting"] = 1
            return summary
        try:
            chain = get_chain()
        except ChainError as exc:
            _note_unreachable(exc)
            summary["waiting"] = ChainOp.objects.filter(status__in=ChainOp.IN_FLIGHT).count()
            return summary
        try:
            reset = chain_reset_reason(chain)
        except ChainError as exc:
            _note_unreachable(exc)
            summary["waiting"] = ChainOp.objects.filter(status__in=ChainOp.IN_FLIGHT).count()
            return summary
        if reset:
            _alert_reset(reset)
            summary["waiting"] = ChainOp.objects.filter(status__in=ChainOp.IN_FLIGHT).count()
            summary["halted"] = "chain reset"
            return summary
        if ChainOp.objects.filter(replay__in=_REPLAYING).exists():
            summary["waiting"] = ChainOp.objects.filter(status__in=ChainOp.IN_FLIGHT).count()
            summary["halted"] = "chain recovery unfinished"
            return summary
        after = 0
        for _ in range(max_ops):
            op = ChainOp.objects.filter(status__in=ChainOp.IN_FLIGHT, pk__gt=after).order_by("pk").first()
            if op is None:
                break
            if op.next_attempt_at and op.next_attempt_at > now:
                summary["waiting"] += 1
                break
            after = op.pk
            outcome = _settle(chain, op) if op.status == ChainOp.Status.MINED else "send"
            if outcome == "send":  # pending, signed, or back to signed after a reorganisation
                outcome = _send_one(chain, op, now=now)
            if outcome == "wait":
                summary["waiting"] += 1
                break
            if outcome == "mined":
                summary["waiting"] += 1
                continue
            summary[outcome] += 1
    return summary


_REPLAYING = (ChainOp.Replay.DUE, ChainOp.Replay.SENT)


def _alert_reset(reason: str) -> None:
    """One open alert for a reset chain, however many sends it stops."""
    if not ChainAlert.objects.filter(kind="chain_reset", resolved_at__isnull=True).exists():
        _alert("chain_reset", f"Sending halted: the chain is not the recorded deployment ({reason}).")


def _note_unreachable(exc: Exception) -> None:
    op = ChainOp.objects.filter(status__in=ChainOp.IN_FLIGHT).order_by("pk").first()
    if op is not None:
        _retry_later(op, exc)


def _retry_later(op: ChainOp, exc: Exception) -> None:
    op.attempts += 1
    op.last_error = str(exc)[:500]
    op.next_attempt_at = timezone.now() + _backoff(op.attempts)
    op.save(update_fields=["attempts", "last_error", "next_attempt_at"])
    if op.attempts == settings.CHAIN_ALERT_AFTER_ATTEMPTS:
        _alert("stuck", f"Outbox row #{op.pk} ({op.key}) failed {op.attempts} times: {op.last_error}", op)


def _sender_nonce(chain: Chain, op: ChainOp) -> int:
    stored = ChainOp.objects.filter(sender=op.sender, nonce__isnull=False).aggregate(n=Max("nonce"))["n"]
    return max(chain.chain_nonce(op.sender), -1 if stored is None else stored + 1)


def _store_signed(op: ChainOp, signed, **extra) -> None:
    """Step 1's record, committed before any broadcast: the nonce, bytes, hash and fees."""
    op.nonce, op.raw_tx, op.tx_hash = signed.nonce, signed.raw, signed.tx_hash
    op.tx_hashes = [*(h for h in op.tx_hashes if h != signed.tx_hash), signed.tx_hash]
    op.max_fee_per_gas, op.priority_fee_per_gas = signed.max_fee, signed.tip
    op.signed_at = timezone.now()
    for name, value in extra.items():
        setattr(op, name, value)
    op.save(
        update_fields=[
            "nonce",
            "raw_tx",
            "tx_hash",
            "tx_hashes",
            "max_fee_per_gas",
            "priority_fee_per_gas",
            "signed_at",
            *extra,
        ]
    )


def _sign(chain: Chain, op: ChainOp):
    """The row's transaction, signed at its sender's next nonce."""
    return chain.sign(
        sender_index=op.sender,
        contract=op.contract,
        function=op.function,
        args=_decode_args(op),
        to=op.to,
        value=int(op.value),
        nonce=_sender_nonce(chain, op),
    )


def _send_one(chain: Chain, op: ChainOp, *, now) -> str:
    try:
        receipt = None
        if op.status == ChainOp.Status.PENDING:
            try:
                signed = _sign(chain, op)
            except Reverted as exc:
                _fail(op, str(exc))
                return "failed"
            _store_signed(op, signed, status=ChainOp.Status.SIGNED)
        else:
            # Signed before: any of its signatures (fee bumps) may have been mined meanwhile.
            receipt = _any_receipt(chain, op, timeout=0)
            if receipt is None and _bump_due(op, now):
                _fee_bump(chain, op)
        if receipt is None:
            chain.broadcast(op.raw_tx)
            receipt = _any_receipt(chain, op, timeout=settings.CHAIN_RECEIPT_TIMEOUT_SECONDS)
        if receipt is None:
            raise ChainError(f"no receipt for {op.tx_hash} yet", retryable=True)
    except ChainError as exc:
        if not exc.retryable and op.status == ChainOp.Status.PENDING:
            _fail(op, str(exc))
            return "failed"
        _retry_later(op, exc)
        return "wait"
    return _settle(chain, op, receipt=receipt)


def _any_receipt(chain: Chain, op: ChainOp, *, timeout: float):
    """The receipt of whichever of the row's signatures was mined (the current one waited for)."""
    for tx_hash in op.tx_hashes or [op.tx_hash]:
        if tx_hash != op.tx_hash:
            receipt = chain.receipt(tx_hash, timeout=0)
            if receipt is not None:
                return receipt
    return chain.receipt(op.tx_hash, timeout=timeout)


# --- Fee bump ------------------------------------------------------------------------

FEE_BUMP = Decimal("1.125")  # nodes refuse a replacement below +10 % on both fees


def _bump_due(op: ChainOp, now) -> bool:
    return op.signed_at is not None and op.signed_at + timedelta(seconds=settings.CHAIN_FEE_BUMP_AFTER) <= now


def _raised(wei: int) -> int:
    return int((Decimal(wei) * FEE_BUMP).to_integral_value(rounding=ROUND_CEILING))


def _fee_bump(chain: Chain, op: ChainOp) -> None:
    """Re-sign the row at its nonce with both fees raised by 12.5 % (or what the base fee now
    needs, if more), up to ``CHAIN_MAX_FEE_GWEI``; past the cap, one ``stuck`` alert. The
    earlier hashes stay on the row: whichever is mined is its receipt."""
    if op.max_fee_per_gas is None or op.priority_fee_per_gas is None:
        return  # signed before fees were recorded: nothing to raise from
    cap = int(Decimal(settings.CHAIN_MAX_FEE_GWEI) * 10**9)
    tip = _raised(op.priority_fee_per_gas)
    max_fee = max(_raised(op.max_fee_per_gas), min(chain.base_fee() * 2 + tip, cap))
    if max_fee > cap:
        if not op.alerts.filter(kind="stuck", resolved_at__isnull=True).exists():
            _alert(
                "stuck",
                f"Outbox row #{op.pk} ({op.key}) is not mined at {op.max_fee_per_gas} wei/gas and the next fee bump"
                f" ({max_fee}) would pass CHAIN_MAX_FEE_GWEI ({settings.CHAIN_MAX_FEE_GWEI} gwei).",
                op,
            )
        return
    signed = chain.resign(raw=op.raw_tx, sender_index=op.sender, max_fee=max_fee, tip=tip)
    log.warning("chain: row #%s re-signed at nonce %s with %s wei/gas: %s", op.pk, op.nonce, max_fee, signed.tx_hash)
    _store_signed(op, signed)


# --- Mined, confirmed, reorganised ---------------------------------------------------


def _deep_enough(chain: Chain, block_number: int) -> bool:
    """The head is at least ``block_number + CHAIN_CONFIRMATIONS - 1`` (depth 1: mined is enough)."""
    depth = max(settings.CHAIN_CONFIRMATIONS, 1)
    return depth == 1 or chain.head() >= block_number + depth - 1


def _settle(chain: Chain, op: ChainOp, *, receipt=None) -> str:
    """A receipt for ``op``: confirm it if its block is deep enough, else record it as mined.
    A mined row whose receipt is gone or whose block changed goes back to signed ("send":
    its stored bytes are broadcast again, same nonce), with a ``reorg`` alert."""
    try:
        if receipt is None:  # mined before: is it still where it was?
            receipt = chain.receipt(op.tx_hash, timeout=0)
            if receipt is None or receipt.block_hash != op.block_hash or receipt.block_number != op.block_number:
                _reorganised(op, receipt)
                return "send"
        deep = _deep_enough(chain, receipt.block_number)
        if deep and settings.CHAIN_CONFIRMATIONS > 1 and chain.block_hash(receipt.block_number) != receipt.block_hash:
            deep = False  # block N changed under us: look again next time
    except ChainError as exc:
        _retry_later(op, exc)
        return "wait"
    if not deep:
        if op.status != ChainOp.Status.MINED:
            _record_mined(op, receipt)
            op.save()
        return "mined"
    try:
        _confirm(chain, op, receipt)
    except MissingHandler as exc:
        op.refresh_from_db()
        if not op.alerts.filter(kind="handler", resolved_at__isnull=True).exists():
            _alert("handler", f"Outbox row #{op.pk} ({op.key}) was mined but not recorded: {exc}", op)
        _retry_later(op, exc)
        return "wait"
    return "confirmed" if receipt.ok else "failed"


def _record_mined(op: ChainOp, receipt) -> None:
    op.status = ChainOp.Status.MINED
    op.tx_hash = receipt.tx_hash
    op.block_number, op.block_hash = receipt.block_number, receipt.block_hash
    op.block_timestamp, op.gas_used = receipt.block_timestamp, receipt.gas_used
    op.result = {"events": receipt.events}
    op.next_attempt_at = None


def _reorganised(op: ChainOp, receipt) -> None:
    where = "gone" if receipt is None else f"now in block {receipt.block_number} {receipt.block_hash}"
    message = (
        f"Outbox row #{op.pk} ({op.key}) was mined in block {op.block_number} {op.block_hash} and is {where}"
        " (a reorganisation): broadcast again at its nonce."
    )
    with transaction.atomic():
        op.status = ChainOp.Status.SIGNED
        op.block_number = op.block_timestamp = op.gas_used = None
        op.block_hash, op.result = "", {}
        op.save(update_fields=["status", "block_number", "block_timestamp", "gas_used", "block_hash", "result"])
        _alert("reorg", message, op)


def _fail(op: ChainOp, message: str) -> None:
    with transaction.atomic():
        op.status, op.last_error = ChainOp.Status.FAILED, message[:500]
        op.save(update_fields=["status", "last_error"])
        _alert("reverted", f"Outbox row #{op.pk} ({op.key}) reverted: {message}", op)


def _confirm(chain: Chain, op: ChainOp, receipt) -> None:
    """Record the receipt and run the row's handler, in one transaction: exactly once."""
    with transaction.atomic():
        _record_mined(op, receipt)
        op.confirmed_at = timezone.now()
        if receipt.ok:
            op.status = ChainOp.Status.CONFIRMED
            name = f"{op.contract}.{op.function}"
            handler = HANDLERS.get(name)
            if handler is not None:
                handler(op, receipt.events)
            elif name in RECORDED_CALLS:
                raise MissingHandler(name)
        else:
            op.status, op.last_error = ChainOp.Status.FAILED, "reverted on chain"
            _alert("reverted", f"Outbox row #{op.pk} ({op.key}) reverted on chain in {op.tx_hash}", op)
        op.save()
    chain_applied(chain, op)


def chainop_retry(*, op: ChainOp) -> ChainOp:
    """Operator: queue a failed row's call again (a new row; the failed one stays as history)."""
    if op.status != ChainOp.Status.FAILED:
        raise ValueError("Only a failed row can be retried.")
    n = ChainOp.objects.filter(key__startswith=f"{op.key}:retry").count() + 1
    return chainop_enqueue(
        key=f"{op.key}:retry{n}",
        contract=op.contract,
        function=op.function,
        args=op.args,
        sender=op.sender,
        to=op.to,
        value=int(op.value),
    )


def chainalert_resolve(*, alert: ChainAlert) -> ChainAlert:
    """Operator: mark an alert as dealt with (it stays as history)."""
    if alert.resolved_at is None:
        alert.resolved_at = timezone.now()
        alert.save(update_fields=["resolved_at"])
    return alert


# --- Recovery of a reset chain -------------------------------------------------------


class RecoveryRefused(Exception):
    """The chain cannot be recovered (as asked, or at all): nothing was sent."""


class RecoveryStopped(Exception):
    """Recovery stopped part-way (the RPC, a replayed call that behaved differently):
    fix the cause and run it again; replayed rows are not sent again."""


@dataclass
class RecoveryPlan:
    reason: str  # why the chain is not the recorded deployment ("" when resuming a replay)
    replay: list[ChainOp]  # confirmed rows to send again, in order
    resign: list[ChainOp]  # in flight at the reset: signed again, fresh, by the outbox afterwards
    pending: int  # rows the outbox sends once the replay is done
    refused: list[tuple[ChainOp, str]]  # rows that cannot be replayed exactly, and why
    resuming: bool = False
    addresses: dict[str, str] = field(default_factory=dict)  # the new deployment (after deploying)
    replayed: list[ChainOp] = field(default_factory=list)  # sent by this run

    def lines(self) -> list[str]:
        out = [f"Reset: {self.reason}" if self.reason else "Resuming an unfinished replay."]
        for op in self.replay:
            out.append(f"replay  #{op.pk} {op.key} (sender {op.sender})")
        for op in self.resign:
            out.append(f"re-sign #{op.pk} {op.key}: was in flight, the outbox sends it afresh")
        out.append(f"then the outbox sends {self.pending + len(self.resign)} open rows")
        for op, why in self.refused:
            out.append(f"REFUSED #{op.pk} {op.key}: {why}")
        return out


# What cannot be replayed exactly: the vault's price moves with block time once it accrues
# interest at a rate or streams a locked profit, and a replay runs in minutes what took days.
def _unreplayable(op: ChainOp) -> str:
    if op.contract != "SUSDai":
        return ""
    events = {e["event"]: e["args"] for e in op.result.get("events", [])}
    if op.function == "report":
        if int(op.args[2]) != 0:
            return "a report with an accrual rate: the vault's value depends on block time from then on"
        if int(events.get("Reported", {}).get("locked", 0)):
            return "a report whose profit unlocks over VAULT_UNLOCK_SECONDS: prices after it depend on block time"
    if op.function == "write_up" and int(events.get("WrittenUp", {}).get("locked", 0)):
        return "a write-up locked to unlock over time: prices after it depend on block time"
    return ""


def _recovery_plan(chain: Chain, deployment: ChainDeployment, reason: str) -> RecoveryPlan:
    replaying = ChainOp.objects.filter(replay__in=_REPLAYING).order_by("pk")
    if not reason:
        return RecoveryPlan(
            reason="",
            replay=list(replaying),
            resign=[],
            pending=ChainOp.objects.filter(status__in=ChainOp.IN_FLIGHT).count(),
            refused=[],
            resuming=True,
            addresses=deployment.addresses,
        )
    confirmed = list(ChainOp.objects.filter(status=ChainOp.Status.CONFIRMED).order_by("pk"))
    return RecoveryPlan(
        reason=reason,
        replay=confirmed,
        resign=list(ChainOp.objects.filter(status__in=[ChainOp.Status.SIGNED, ChainOp.Status.MINED]).order_by("pk")),
        pending=ChainOp.objects.filter(status=ChainOp.Status.PENDING).count(),
        refused=[(op, why) for op in confirmed if (why := _unreplayable(op))],
    )


def _mapped(value, addresses: dict[str, str]):
    if isinstance(value, str) and value.lower() in addresses:
        return addresses[value.lower()]
    if isinstance(value, list):
        return [_mapped(v, addresses) for v in value]
    if isinstance(value, dict):
        return {k: _mapped(v, addresses) for k, v in value.items()}
    return value


def _adopt_deployment(chain: Chain, deployment: ChainDeployment, addresses: dict[str, str]) -> None:
    """One transaction: the new deployment recorded (the old one kept in its history), every
    row pointed at the new contracts, the confirmed rows marked for replay (their nonces were
    the old chain's), the rows in flight back to pending (the outbox signs them afresh)."""
    old = {a.lower(): addresses[name] for name, a in deployment.addresses.items() if name in addresses}
    with transaction.atomic():
        deployment.history = [
            *deployment.history,
            {
                "addresses": deployment.addresses,
                "genesis_hash": deployment.genesis_hash,
                "operator": deployment.operator,
                "replaced_at": timezone.now().isoformat(),
            },
        ]
        deployment.addresses, deployment.genesis_hash = addresses, chain.genesis_hash()
        deployment.save(update_fields=["history", "addresses", "genesis_hash"])
        for op in ChainOp.objects.filter(Q(nonce__isnull=False) | Q(status__in=ChainOp.IN_FLIGHT)).order_by("pk"):
            op.args, op.to, op.nonce = _mapped(op.args, old), _mapped(op.to, old), None
            if op.status == ChainOp.Status.CONFIRMED:
                op.replay = ChainOp.Replay.DUE
            elif op.status in ChainOp.IN_FLIGHT:
                op.status, op.raw_tx, op.tx_hash, op.signed_at = ChainOp.Status.PENDING, "", "", None
                op.block_number = op.block_timestamp = op.gas_used = None
                op.block_hash, op.result = "", {}
                op.attempts, op.next_attempt_at = 0, None
            op.save()
    chain.use(addresses)


def _same_effect(chain: Chain, before: list[dict], after: list[dict], addresses: dict[str, str]) -> bool:
    def key(events, mapping):
        return [(e["contract"], e["event"], _mapped(e["args"], mapping)) for e in events]

    old = {}
    for entry in ChainDeployment.objects.filter(chain_id=chain.chain_id).values_list("history", flat=True):
        for past in entry:
            old |= {a.lower(): addresses[n] for n, a in past["addresses"].items() if n in addresses}
    return key(before, old) == key(after, {})


def _replay_one(chain: Chain, op: ChainOp, addresses: dict[str, str]) -> None:
    """Sign (stored, committed) then broadcast and wait: a crash after signing rebroadcasts
    the same bytes on the next run, so a row is replayed once. No handler, no posting."""
    if op.replay == ChainOp.Replay.DUE:
        try:
            signed = _sign(chain, op)
        except ChainError as exc:
            _alert("recovery", f"Replay of row #{op.pk} ({op.key}) cannot be signed: {exc}", op)
            raise RecoveryStopped(f"row #{op.pk} ({op.key}): {exc}") from exc
        _store_signed(op, signed, replay=ChainOp.Replay.SENT)
    try:
        chain.broadcast(op.raw_tx)
        receipt = chain.receipt(op.tx_hash, timeout=settings.CHAIN_RECEIPT_TIMEOUT_SECONDS)
    except ChainError as exc:
        raise RecoveryStopped(f"row #{op.pk} ({op.key}): {exc}") from exc
    if receipt is None:
        raise RecoveryStopped(f"row #{op.pk} ({op.key}): no receipt for {op.tx_hash} yet")
    if not receipt.ok or not _same_effect(chain, op.result.get("events", []), receipt.events, addresses):
        _alert(
            "recovery",
            f"Replay of row #{op.pk} ({op.key}) in {receipt.tx_hash} "
            + ("reverted" if not receipt.ok else "emitted other events than the original")
            + ": the books and the new chain differ from here; stopped.",
            op,
        )
        raise RecoveryStopped(f"row #{op.pk} ({op.key}) did not replay as it first ran")
    op.replay = ChainOp.Replay.DONE
    op.block_number, op.block_hash = receipt.block_number, receipt.block_hash
    op.block_timestamp, op.gas_used = receipt.block_timestamp, receipt.gas_used
    op.save(update_fields=["replay", "block_number", "block_hash", "block_timestamp", "gas_used"])


def chain_recover(*, dry_run: bool = False) -> RecoveryPlan:
    """After a reset chain is detected (``chain_reset`` alert): deploy the contracts afresh,
    record the deployment, replay every confirmed row in order with fresh nonces (no receipt
    handler runs again, nothing is posted: the books already hold their effects), resolve the
    alert; the outbox then sends the rest. Safe to run again after a crash: it resumes the
    replay, and a row replayed (or signed for replay) is not sent twice. ``dry_run``: the plan.

    Refused, with nothing sent, when a confirmed row's effect depends on block time (the vault
    accruing at a rate, a profit still unlocking): a replay could not reproduce it."""
    with _SendLock() as held:
        if not held:
            raise RecoveryRefused("The outbox is sending right now; run again in a moment.")
        chain = get_chain()
        if chain.embedded:
            raise RecoveryRefused("The embedded chain is rebuilt from the outbox at every start: nothing to recover.")
        deployment = ChainDeployment.objects.filter(chain_id=chain.chain_id).first()
        if deployment is None:
            raise RecoveryRefused(f"No deployment recorded for chain {chain.chain_id}: run `manage.py chain_deploy`.")
        reason = chain_reset_reason(chain)
        plan = _recovery_plan(chain, deployment, reason)
        if not reason and not plan.replay:
            raise RecoveryRefused(f"Chain {chain.chain_id} is the recorded deployment: nothing to recover.")
        if plan.refused:
            raise RecoveryRefused(
                "Cannot replay exactly; recover by hand: "
                + "; ".join(f"row #{op.pk} ({op.key}): {why}" for op, why in plan.refused)
            )
        if dry_run:
            return plan
        if reason:
            plan.addresses = deploy(chain)
            _adopt_deployment(chain, deployment, plan.addresses)
            plan.replay = list(ChainOp.objects.filter(replay__in=_REPLAYING).order_by("pk"))
        for op in plan.replay:
            _replay_one(chain, op, plan.addresses)
            plan.replayed.append(op)
        for alert in ChainAlert.objects.filter(kind__in=["chain_reset", "recovery"], resolved_at__isnull=True):
            chainalert_resolve(alert=alert)
        log.warning("chain %s recovered: %d rows replayed", chain.chain_id, len(plan.replayed))
        return plan
