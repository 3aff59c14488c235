"""Proof of revenue: each epoch's settlements as a Merkle tree, and each settlement's proof.

A settlement's leaf is the hash of its published record (``settlement_leaf_data``:
canonical JSON, sorted keys, no spaces, UTF-8); the leaves of an epoch, in
settlement id order, make the tree whose root ``RevenueAnchor`` holds.
"""

import json
from dataclasses import dataclass

from financing import merkle
from financing.chain.client import ChainError
from financing.chain.node import get_chain
from financing.models import JournalEntry, RevenueEpoch


def settlement_leaf_data(entry: JournalEntry) -> bytes:
    """The published record of one settlement: canonical JSON (sorted keys, no spaces, UTF-8)."""
    s = entry.settlement
    record = {
        "settlement": s.pk,
        "booking": str(s.booking.public_id),
        "server": s.server.hostname,
        "gpu_seconds": s.gpu_seconds,
        "interval_start": s.interval_start.isoformat(),
        "interval_end": s.interval_end.isoformat(),
        "gross": f"{s.gross_amount:.6f}",
        "postings": [
            [p.account.code, f"{p.amount:.6f}", p.line] for p in entry.postings.select_related("account").order_by("pk")
        ],
    }
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def _epoch_entries(epoch: RevenueEpoch):
    return (
        JournalEntry.objects.filter(epoch_mark__epoch=epoch, settlement__isnull=False)
        .select_related("settlement__booking", "settlement__server")
        .order_by("settlement_id")
    )


def epoch_tree(epoch: RevenueEpoch) -> tuple[list[JournalEntry], merkle.MerkleTree | None]:
    entries = list(_epoch_entries(epoch))
    if not entries:
        return entries, None
    return entries, merkle.MerkleTree([merkle.leaf_hash(settlement_leaf_data(e)) for e in entries])


@dataclass(frozen=True)
class SettlementProof:
    """A settlement's leaf in its epoch's Merkle tree, the path to the root, and the root."""

    epoch: RevenueEpoch
    index: int  # the leaf's position in the epoch (settlements in id order)
    data: str  # the leaf's record: canonical JSON, hashed as UTF-8
    leaf: str  # 0x-hex
    proof: list[str]  # sibling hashes from the leaf up, 0x-hex
    root: str  # the epoch's root as computed here


def settlement_proof(*, settlement_id: int) -> SettlementProof | None:
    """A settlement's leaf, proof and epoch root (None if it is in no epoch yet)."""
    entry = JournalEntry.objects.filter(settlement_id=settlement_id).select_related("epoch_mark__epoch").first()
    if entry is None or not hasattr(entry, "epoch_mark"):
        return None
    epoch = entry.epoch_mark.epoch
    entries, tree = epoch_tree(epoch)
    index = next(i for i, e in enumerate(entries) if e.pk == entry.pk)
    data = settlement_leaf_data(entry)
    return SettlementProof(
        epoch=epoch,
        index=index,
        data=data.decode(),
        leaf="0x" + merkle.leaf_hash(data).hex(),
        proof=["0x" + p.hex() for p in tree.proof(index)],
        root="0x" + tree.root.hex(),
    )


def revenue_epochs(*, limit: int = 100) -> list[RevenueEpoch]:
    return list(RevenueEpoch.objects.select_related("anchor_op").order_by("-number")[:limit])


@dataclass(frozen=True)
class AnchoredRoot:
    """The root ``RevenueAnchor`` holds for an epoch: None when not anchored, or when the chain
    cannot be asked (then ``error`` says why)."""

    root: str | None
    error: str = ""


def anchored_root(*, epoch_number: int) -> AnchoredRoot:
    try:
        raw = get_chain().call("RevenueAnchor", "roots", epoch_number)
    except ChainError as exc:
        return AnchoredRoot(root=None, error=f"The chain is not reachable: {exc}")
    root = "0x" + bytes(raw).hex()
    return AnchoredRoot(root=None if int(root, 16) == 0 else root)


@dataclass(frozen=True)
class SettlementProofCheck(SettlementProof):
    """A settlement's proof, checked here against the root anchored on chain."""

    record: dict  # the leaf's record, parsed
    leaf_ok: bool  # the leaf is the hash of the record
    computed_root: str  # where the proof leads from the leaf
    anchored_root: str | None  # the root on chain (None: not anchored, or the chain is unreachable)
    chain_error: str
    matches: bool  # computed = anchored = the epoch's root


def settlement_proof_check(*, settlement_id: int) -> SettlementProofCheck | None:
    """A settlement's proof of revenue, checked here: the leaf recomputed from its record,
    the proof followed to a root, and that root compared with the one anchored on chain.

    None when the settlement is in no epoch yet."""
    proof = settlement_proof(settlement_id=settlement_id)
    if proof is None:
        return None
    leaf = merkle.leaf_hash(proof.data.encode())
    node = leaf
    for sibling in proof.proof:
        node = merkle.node_hash(node, bytes.fromhex(sibling[2:]))
    computed = "0x" + node.hex()
    chain = anchored_root(epoch_number=proof.epoch.number)
    return SettlementProofCheck(
        **proof.__dict__,
        record=json.loads(proof.data),
        leaf_ok="0x" + leaf.hex() == proof.leaf,
        computed_root=computed,
        anchored_root=chain.root,
        chain_error=chain.error,
        matches=chain.root is not None and computed == chain.root == proof.root,
    )
