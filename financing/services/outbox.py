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

The RPC down or a timeout: the row waits with exponential backoff and the
rows behind it wait too (order matters: a wallet's gas funding comes before
its approvals). A call that reverts is marked failed, the operator is
alerted, and sending goes on. One sender at a time: on PostgreSQL an
advisory lock.

The embedded chain is this process's memory; ``get_chain`` rebuilds it from
the stored genesis time, redeploys (same deployer, same nonces, same
addresses) and replays every mined row's stored bytes at its recorded block
time, so the chain matches the database again.
"""

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from financing.chain.client import Chain, ChainError, EmbeddedChain, Reverted, address_for, rpc_chain
from financing.chain.deploy import deploy
from financing.models import ChainAlert, ChainDeployment, ChainOp

log = logging.getLogger(__name__)

_chain: Chain | None = None
_chain_lock = threading.RLock()
_SEND_LOCK_ID = 0x1F0C4A1
HANDLERS: dict[str, Callable[[ChainOp, dict], None]] = {}  # "Contract.function" -> handler(op, receipt events)


def handles(name: str):
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


# --- The chain of this process ----------------------------------------------------------


def get_chain() -> Chain:
    """This process's chain, deployed and (embedded) replayed up to the outbox's last mined row."""
    global _chain
    with _chain_lock:
        if _chain is None:
            _chain = _connect()
        if _chain.embedded:
            _sync(_chain)
        return _chain


def chain_reset() -> None:
    """Forget this process's chain (the next ``get_chain`` connects, or rebuilds, again)."""
    global _chain
    with _chain_lock:
        _chain = None


def _connect() -> Chain:
    if settings.CHAIN_RPC_URL:
        chain = rpc_chain(settings.CHAIN_RPC_URL)
        deployment = ChainDeployment.objects.filter(chain_id=chain.chain_id).first()
        if deployment is None:
            raise ChainError(
                f"No contracts recorded for chain {chain.chain_id}: run `manage.py chain_deploy`.", retryable=False
            )
        chain.use(deployment.addresses)
        return chain
    deployment = ChainDeployment.objects.filter(genesis_timestamp__isnull=False).first()
    genesis = deployment.genesis_timestamp if deployment else int(time.time()) - 60
    chain = EmbeddedChain(genesis_timestamp=genesis)
    chain.use(deploy(chain))
    if deployment is not None and deployment.addresses != chain.addresses:
        raise ChainError("The embedded chain redeployed to different addresses.", retryable=False)
    chain.deploy_snapshot = chain.snapshot()
    return chain


def _record_deployment(chain: EmbeddedChain) -> None:
    ChainDeployment.objects.get_or_create(
        chain_id=chain.chain_id,
        defaults={
            "addresses": chain.addresses,
            "operator": address_for(0),
            "genesis_timestamp": chain.genesis_timestamp,
        },
    )


def _mined(queryset):
    return queryset.filter(block_number__isnull=False).exclude(raw_tx="")


def _sync(chain: EmbeddedChain) -> None:
    """Replay the mined rows this process's chain has not executed, at their block times.

    If the chain has executed a row the database no longer has (a test's
    rolled-back transaction, a restored backup), it starts again from the
    deployment."""
    _record_deployment(chain)
    if chain.applied_upto and not _mined(ChainOp.objects.filter(pk=chain.applied_upto)).exists():
        chain.revert(chain.deploy_snapshot)
        chain.deploy_snapshot = chain.snapshot()
    for op in _mined(ChainOp.objects.filter(pk__gt=chain.applied_upto)).order_by("pk").iterator():
        chain.at(op.block_timestamp)
        try:
            chain.broadcast(op.raw_tx)
        finally:
            chain.at(None)
        chain.applied_upto = op.pk


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


def chain_send(*, max_ops: int = 200, now=None) -> dict[str, int]:
    """Send queued rows in order until one must wait; returns counts."""
    summary = {"confirmed": 0, "failed": 0, "waiting": 0}
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
    _confirm(chain, op, receipt)
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
            handler = HANDLERS.get(f"{op.contract}.{op.function}")
            if handler is not None:
                handler(op, receipt.events)
        else:
            op.status, op.last_error = ChainOp.Status.FAILED, "reverted on chain"
            _alert("reverted", f"Outbox row #{op.pk} ({op.key}) reverted on chain in {op.tx_hash}", op)
        op.save()
    if chain.embedded:
        chain.applied_upto = op.pk


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
