"""This process's chain: connected (JSON-RPC) or rebuilt in memory (embedded).

``get_chain`` is how everything that reads the chain or sends to it gets
it. A JSON-RPC chain must have its contracts recorded (``manage.py
chain_deploy``). The embedded chain is this process's memory: it is rebuilt
from the stored genesis time, redeployed (same deployer, same nonces, same
addresses) and every mined outbox row's stored bytes are replayed at its
recorded block time, so the chain matches the database again.
"""

import threading
import time

from django.conf import settings

from financing.chain.client import Chain, ChainError, EmbeddedChain, address_for, rpc_chain
from financing.chain.deploy import deploy
from financing.models import ChainDeployment, ChainOp

_chain: Chain | None = None
_chain_lock = threading.RLock()


def get_chain() -> Chain:
    """This process's chain, deployed and (embedded) replayed up to the outbox's last mined row."""
    global _chain
    with _chain_lock:
        if _chain is None:
            _chain = _connect()
        if _chain.embedded:
            _sync(_chain)
        else:
            _follow_deployment(_chain)
        return _chain


def _follow_deployment(chain: Chain) -> None:
    """A JSON-RPC chain redeployed by another process (``manage.py chain_recover``): use its addresses."""
    addresses = ChainDeployment.objects.filter(chain_id=chain.chain_id).values_list("addresses", flat=True).first()
    if addresses and addresses != chain.addresses:
        chain.use(addresses)


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
    if ChainDeployment.objects.filter(chain_id=chain.chain_id).exists():
        return
    ChainDeployment.objects.get_or_create(
        chain_id=chain.chain_id,
        defaults={
            "addresses": chain.addresses,
            "operator": address_for(0),
            "genesis_timestamp": chain.genesis_timestamp,
            "genesis_hash": chain.genesis_hash(),
        },
    )


def chain_reset_reason(chain: Chain) -> str:
    """Why ``chain`` is not the recorded deployment any more ("" when it is).

    A JSON-RPC node restarted with the same chain id (a wiped development
    chain) has a new block 0 and no code at our addresses: nothing sent to it
    would match the books. The embedded chain is rebuilt from the database, so
    it is always the recorded one. Two reads (block 0 and one ``eth_getCode``)."""
    if chain.embedded:
        return ""
    deployment = ChainDeployment.objects.filter(chain_id=chain.chain_id).first()
    if deployment is None:
        return f"no contracts recorded for chain {chain.chain_id}"
    if deployment.genesis_hash:
        genesis = chain.genesis_hash()
        if genesis != deployment.genesis_hash:
            return f"chain {chain.chain_id} has genesis {genesis}, the deployment recorded {deployment.genesis_hash}"
    if not chain.has_code("SUSDai"):
        return (
            f"no code at the recorded SUSDai address {deployment.addresses.get('SUSDai', '')} on chain {chain.chain_id}"
        )
    return ""


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


def chain_applied(chain: Chain, op: ChainOp) -> None:
    """The embedded chain has executed ``op`` (sent by the outbox): replay starts after it."""
    if chain.embedded:
        chain.applied_upto = op.pk


def contract_addresses() -> dict[str, str]:
    """The deployed contracts' addresses by name (the embedded chain records them on first use)."""
    deployment = ChainDeployment.objects.order_by("-pk").first()
    if deployment is None:
        get_chain()
        deployment = ChainDeployment.objects.order_by("-pk").first()
    return deployment.addresses
