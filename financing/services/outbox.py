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
``manage.py chain_reset_recover`` (README, "On chain").

The chain itself comes from ``financing.chain.node.get_chain`` (the embedded
chain is rebuilt there from the rows this outbox mined).
"""

import logging
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from financing.chain.client import Chain, ChainError, Reverted
from financing.chain.node import chain_applied, chain_reset_reason, get_chain
from financing.models import ChainAlert, ChainOp

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
    with the reason when the chain is not the recorded deployment)."""
    summary: dict[str, int | str] = {"confirmed": 0, "failed": 0, "waiting": 0}
    with _SendLock() as held:
        if not held:
            return summary
        # The head row's backoff holds while the chain is unreachable too: no connection
        # attempt (and no counted try) before it is due.
        head = ChainOp.objects.filter(status__in=_OPEN).order_by("pk").first()
        if head is not None and head.next_attempt_at and head.next_attempt_at > (now or timezone.now()):
            summary["waiting"] = 1
            return summary
        try:
            chain = get_chain()
        except ChainError as exc:
            _note_unreachable(exc)
            summary["waiting"] = ChainOp.objects.filter(status__in=_OPEN).count()
            return summary
        try:
            reset = chain_reset_reason(chain)
        except ChainError as exc:
            _note_unreachable(exc)
            summary["waiting"] = ChainOp.objects.filter(status__in=_OPEN).count()
            return summary
        if reset:
            _alert_reset(reset)
            summary["waiting"] = ChainOp.objects.filter(status__in=_OPEN).count()
            summary["halted"] = "chain reset"
            return summary
        for _ in range(max_ops):
            op = ChainOp.objects.filter(status__in=_OPEN).order_by("pk").first()
            if op is None:
                break
            if op.next_attempt_at and op.next_attempt_at > (now or timezone.now()):
                summary["waiting"] += 1
                break
            outcome = _send_one(chain, op)
            if outcome == "wait":
                summary["waiting"] += 1
                break
            summary[outcome] += 1
    return summary


_OPEN = (ChainOp.Status.PENDING, ChainOp.Status.SIGNED)


def _alert_reset(reason: str) -> None:
    """One open alert for a reset chain, however many sends it stops."""
    if not ChainAlert.objects.filter(kind="chain_reset", resolved_at__isnull=True).exists():
        _alert("chain_reset", f"Sending halted: the chain is not the recorded deployment ({reason}).")


def _note_unreachable(exc: Exception) -> None:
    op = ChainOp.objects.filter(status__in=_OPEN).order_by("pk").first()
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


def _send_one(chain: Chain, op: ChainOp) -> str:
    try:
        if op.status == ChainOp.Status.PENDING:
            try:
                signed = chain.sign(
                    sender_index=op.sender,
                    contract=op.contract,
                    function=op.function,
                    args=_decode_args(op),
                    to=op.to,
                    value=int(op.value),
                    nonce=_sender_nonce(chain, op),
                )
            except Reverted as exc:
                _fail(op, str(exc))
                return "failed"
            op.nonce, op.raw_tx, op.tx_hash, op.status = signed.nonce, signed.raw, signed.tx_hash, ChainOp.Status.SIGNED
            op.save(update_fields=["nonce", "raw_tx", "tx_hash", "status"])
        chain.broadcast(op.raw_tx)
        receipt = chain.receipt(op.tx_hash, timeout=settings.CHAIN_RECEIPT_TIMEOUT_SECONDS)
        if receipt is None:
            raise ChainError(f"no receipt for {op.tx_hash} yet", retryable=True)
    except ChainError as exc:
        if not exc.retryable and op.status == ChainOp.Status.PENDING:
            _fail(op, str(exc))
            return "failed"
        _retry_later(op, exc)
        return "wait"
    try:
        _confirm(chain, op, receipt)
    except MissingHandler as exc:
        op.refresh_from_db()
        if not op.alerts.filter(kind="handler", resolved_at__isnull=True).exists():
            _alert("handler", f"Outbox row #{op.pk} ({op.key}) was mined but not recorded: {exc}", op)
        _retry_later(op, exc)
        return "wait"
    return "confirmed" if receipt.ok else "failed"


def _fail(op: ChainOp, message: str) -> None:
    with transaction.atomic():
        op.status, op.last_error = ChainOp.Status.FAILED, message[:500]
        op.save(update_fields=["status", "last_error"])
        _alert("reverted", f"Outbox row #{op.pk} ({op.key}) reverted: {message}", op)


def _confirm(chain: Chain, op: ChainOp, receipt) -> None:
    with transaction.atomic():
        op.block_number, op.block_timestamp, op.gas_used = (
            receipt.block_number,
            receipt.block_timestamp,
            receipt.gas_used,
        )
        op.result = {"events": receipt.events}
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
