# pragma version ~=0.4.3
# pragma nonreentrancy off
"""
@title Revenue Anchor
@custom:contract-name RevenueAnchor
@license MIT
@notice Anchors, once per epoch, the Merkle root of that epoch's revenue
        settlements, so anyone holding a settlement and its proof can
        check it was part of the published books. The tree is the one of
        `financing/merkle.py`: SHA-256, leaf = SHA256(0x00 || data), inner
        node = SHA256(0x01 || min(a, b) || max(a, b)), an odd node promoted
        unchanged. Anchoring stores one root whatever the epoch's size.

        `verify` takes the leaf's data, not its hash, and hashes it here
        with the leaf prefix: an inner node, or the root with an empty
        proof, can never pass for a leaf.
"""


from snekmate.auth.interfaces import IAccessControl
implements: IAccessControl

from snekmate.auth import access_control
initializes: access_control

exports: (
    access_control.DEFAULT_ADMIN_ROLE,
    access_control.supportsInterface,
    access_control.hasRole,
    access_control.getRoleAdmin,
    access_control.grantRole,
    access_control.revokeRole,
    access_control.renounceRole,
    access_control.set_role_admin,
)


OPERATOR_ROLE: public(constant(bytes32)) = keccak256("OPERATOR_ROLE")

# @dev Stored in `_latest` while no epoch is anchored. The slot starts
# non-zero so that every anchor costs the same (no zero-to-non-zero write).
_NONE: constant(uint256) = max_value(uint256)

# @dev The longest leaf record `verify` takes, in bytes. A settlement's
# record (`financing.selectors.proofs.settlement_leaf_data`: at most 12
# postings) is under 2,400 bytes even with every field at its column's
# maximum length.
MAX_LEAF_DATA: constant(uint256) = 4_096

roots: public(HashMap[uint256, bytes32])
_latest: uint256


event Anchored:
    epoch: indexed(uint256)
    root: bytes32


@deploy
def __init__():
    access_control.__init__()
    self._latest = _NONE


@external
def anchor(epoch: uint256, root: bytes32):
    """
    @dev Records `root` as the Merkle root of `epoch`'s settlements.
    """
    access_control._check_role(OPERATOR_ROLE, msg.sender)
    assert root != empty(bytes32), "RevenueAnchor: empty root"
    assert epoch != _NONE, "RevenueAnchor: invalid epoch"
    assert self.roots[epoch] == empty(bytes32), "RevenueAnchor: epoch anchored"
    self.roots[epoch] = root
    # _NONE + 1 wraps to 0, below every epoch + 1: one comparison, the same path for the first anchor.
    if unsafe_add(epoch, 1) > unsafe_add(self._latest, 1):
        self._latest = epoch
    log Anchored(epoch=epoch, root=root)


@external
@view
def latest_epoch() -> uint256:
    """
    @dev The highest anchored epoch; reverts while none is (so 0 always
         means that epoch 0 was anchored).
    """
    latest: uint256 = self._latest
    assert latest != _NONE, "RevenueAnchor: no epoch anchored"
    return latest


@external
@view
def verify(epoch: uint256, data: Bytes[MAX_LEAF_DATA], proof: DynArray[bytes32, 64]) -> bool:
    """
    @dev Whether the leaf record `data` (its bytes, unhashed) is in the
         tree anchored for `epoch`: its leaf node SHA256(0x00 || data),
         followed up `proof` (sibling hashes, leaf upwards), reaches the
         root.
    """
    root: bytes32 = self.roots[epoch]
    if root == empty(bytes32):
        return False
    node: bytes32 = sha256(concat(b"\x00", data))
    for sibling: bytes32 in proof:
        if convert(node, uint256) <= convert(sibling, uint256):
            node = sha256(concat(b"\x01", node, sibling))
        else:
            node = sha256(concat(b"\x01", sibling, node))
    return node == root
