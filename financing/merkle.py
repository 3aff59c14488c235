"""Merkle tree for proof of revenue (SHA-256, sorted pairs).

This module is the reference for the tree whose roots are anchored on chain
(``contracts/RevenueAnchor.vy``) and checked in browsers with WebCrypto. The
algorithm, exactly:

1. Hash function: SHA-256 (FIPS 180-4); every hash is 32 bytes.
2. Leaf node: ``leaf = SHA256(0x00 || data)``, where ``data`` is the leaf's
   serialised record (its bytes; how a record is serialised is defined by the
   publisher of the epoch).
3. Inner node: ``node = SHA256(0x01 || min(a, b) || max(a, b))``, where ``a``
   and ``b`` are the two 32-byte children and ``min``/``max`` compare them as
   byte strings (equivalently as unsigned 256-bit big-endian integers). The
   pair is sorted, so a proof needs no left/right flags. The 0x00/0x01
   prefixes keep a leaf from ever being read as an inner node.
4. Levels: level 0 is the list of leaf nodes in their published order. Level
   ``k + 1`` pairs the nodes of level ``k`` in order: (0, 1), (2, 3), ... If a
   level has an odd number of nodes, its last node is promoted unchanged to
   the next level (it is not hashed with itself). The level with one node is
   the root. A tree of one leaf has that leaf node as its root; a tree of no
   leaves has no root.
5. Proof for leaf ``i``: from level 0 upwards, the sibling of the current node
   (index ``j ^ 1``) whenever that sibling exists; nothing is added at a level
   where the node is the promoted odd one. ``j`` halves at each level.
6. Verification: ``h = leaf``; for each ``p`` in the proof, in order,
   ``h = SHA256(0x01 || min(h, p) || max(h, p))``; the proof is valid when
   ``h`` equals the root. On chain, ``RevenueAnchor.verify(epoch, data,
   proof)`` takes the record's bytes (at most 4,096), not its leaf, and
   computes the leaf itself, so an inner node or the root can never be
   passed off as a leaf there.
"""

from hashlib import sha256

__all__ = ["MerkleTree", "leaf_hash", "node_hash", "verify"]

_LEAF = b"\x00"
_NODE = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """The leaf node of ``data``: SHA256(0x00 || data)."""
    return sha256(_LEAF + data).digest()


def node_hash(a: bytes, b: bytes) -> bytes:
    """The inner node over two children: SHA256(0x01 || min(a, b) || max(a, b))."""
    return sha256(_NODE + a + b if a <= b else _NODE + b + a).digest()


class MerkleTree:
    """A tree over leaf nodes (32-byte leaf hashes, as made by :func:`leaf_hash`)."""

    def __init__(self, leaves: list[bytes]) -> None:
        for leaf in leaves:
            if len(leaf) != 32:
                raise ValueError("a leaf must be a 32-byte leaf hash")
        level = list(leaves)
        self.levels: list[list[bytes]] = [level]
        while len(level) > 1:
            paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                paired.append(level[-1])
            level = paired
            self.levels.append(level)

    def __len__(self) -> int:
        return len(self.levels[0])

    @property
    def root(self) -> bytes:
        if not self.levels[0]:
            raise ValueError("an empty tree has no root")
        return self.levels[-1][0]

    def proof(self, index: int) -> list[bytes]:
        """The siblings from leaf ``index`` up to the root."""
        if not 0 <= index < len(self.levels[0]):
            raise IndexError("leaf index out of range")
        path = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                path.append(level[sibling])
            index //= 2
        return path


def verify(leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    """Whether ``proof`` takes the leaf node ``leaf`` to ``root``."""
    node = leaf
    for sibling in proof:
        node = node_hash(node, sibling)
    return node == root
