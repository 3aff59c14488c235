# pragma version ~=0.4.3
# pragma nonreentrancy off
"""
@title CALIBER GPU Title
@custom:contract-name CaliberNFT
@license MIT
@notice One ERC-721 token per financed GPU server: the collateral title.
        The token stores the hash of the off-chain collateral record
        (identity, custody, insurance, appraisal); the registrar mints
        and updates it. While a loan is outstanding the loan manager
        sets a lien, which blocks every transfer; on default the loan
        manager forecloses, moving the token to the protocol's custody
        address and clearing the lien.

        A lean, non-enumerable ERC-721 (the enumerable extension and
        per-token URI storage would put `mint` well over its gas goal);
        roles come from snekmate's `access_control`, whose
        `DEFAULT_ADMIN_ROLE` is the deployer. `safeTransferFrom` takes
        at most 1,024 bytes of `data`.
"""


from ethereum.ercs import IERC165
implements: IERC165

# @dev The built-in `IERC721` declares the transfer functions `payable`;
# this token takes no ether, so it uses the interface for its events only.
from ethereum.ercs import IERC721

from snekmate.tokens.interfaces import IERC721Receiver

from snekmate.auth.interfaces import IAccessControl
implements: IAccessControl

from snekmate.auth import access_control
initializes: access_control

exports: (
    access_control.DEFAULT_ADMIN_ROLE,
    access_control.hasRole,
    access_control.getRoleAdmin,
    access_control.grantRole,
    access_control.revokeRole,
    access_control.renounceRole,
    access_control.set_role_admin,
)


REGISTRAR_ROLE: public(constant(bytes32)) = keccak256("REGISTRAR_ROLE")
LOAN_MANAGER_ROLE: public(constant(bytes32)) = keccak256("LOAN_MANAGER_ROLE")

name: public(constant(String[25])) = "CALIBER GPU Title"
symbol: public(constant(String[7])) = "CALIBER"

_SUPPORTED_INTERFACES: constant(bytes4[4]) = [
    0x01FFC9A7, # ERC-165
    0x80AC58CD, # ERC-721
    0x5B5E139F, # ERC-721 metadata
    0x7965DB0B, # IAccessControl
]

_ON_ERC721_RECEIVED: constant(bytes4) = method_id(
    "onERC721Received(address,address,uint256,bytes)", output_type=bytes4
)


# @dev The custody address that receives foreclosed titles.
protocol: public(immutable(address))
_BASE_URI: immutable(String[80])

_owners: HashMap[uint256, address]
_balances: HashMap[address, uint256]
_approvals: HashMap[uint256, address]
isApprovedForAll: public(HashMap[address, HashMap[address, bool]])

# @dev Hash of the off-chain collateral record of each title.
record_hash: public(HashMap[uint256, bytes32])
# @dev True while a loan is secured by the title; transfers revert.
lien: public(HashMap[uint256, bool])


event Minted:
    token_id: indexed(uint256)
    to: address
    record_hash: bytes32

event RecordUpdated:
    token_id: indexed(uint256)
    record_hash: bytes32

event LienSet:
    token_id: indexed(uint256)
    active: bool

event Foreclosed:
    token_id: indexed(uint256)
    from_: address
    to: address


@deploy
def __init__(base_uri: String[80], protocol_: address):
    """
    @param base_uri The prefix of every token URI (the decimal id follows).
    @param protocol_ The custody address that receives foreclosed titles.
    """
    assert protocol_ != empty(address), "CaliberNFT: protocol is the zero address"
    access_control.__init__()
    _BASE_URI = base_uri
    protocol = protocol_


# ---------------------------------------------------------------- ERC-165 / metadata


@external
@view
def supportsInterface(interface_id: bytes4) -> bool:
    return interface_id in _SUPPORTED_INTERFACES


@external
@view
def tokenURI(token_id: uint256) -> String[158]:
    self._require_minted(token_id)
    return concat(_BASE_URI, uint2str(token_id))


# ---------------------------------------------------------------- ERC-721 views


@external
@view
def balanceOf(owner: address) -> uint256:
    assert owner != empty(address), "CaliberNFT: zero address"
    return self._balances[owner]


@external
@view
def ownerOf(token_id: uint256) -> address:
    return self._require_minted(token_id)


@external
@view
def getApproved(token_id: uint256) -> address:
    self._require_minted(token_id)
    return self._approvals[token_id]


# ---------------------------------------------------------------- ERC-721 mutations


@external
def approve(approved: address, token_id: uint256):
    owner: address = self._require_minted(token_id)
    assert approved != owner, "CaliberNFT: approval to current owner"
    assert msg.sender == owner or self.isApprovedForAll[owner][msg.sender], "CaliberNFT: not owner nor operator"
    self._approvals[token_id] = approved
    log IERC721.Approval(owner=owner, approved=approved, token_id=token_id)


@external
def setApprovalForAll(operator: address, approved: bool):
    assert operator != msg.sender, "CaliberNFT: approve to caller"
    self.isApprovedForAll[msg.sender][operator] = approved
    log IERC721.ApprovalForAll(owner=msg.sender, operator=operator, approved=approved)


@external
def transferFrom(owner: address, to: address, token_id: uint256):
    self._transfer(owner, to, token_id)


@external
def safeTransferFrom(owner: address, to: address, token_id: uint256, data: Bytes[1_024] = b""):
    """
    @dev ERC-721 `safeTransferFrom`, with or without `data`. `data` is
         capped at 1,024 bytes (Vyper needs a bound): a call with more
         reverts at ABI decoding, a deviation from ERC-721's unbounded
         `bytes`.
    """
    self._transfer(owner, to, token_id)
    if to.is_contract:
        response: bytes4 = extcall IERC721Receiver(to).onERC721Received(msg.sender, owner, token_id, data)
        assert response == _ON_ERC721_RECEIVED, "CaliberNFT: transfer to non-receiver"


# ---------------------------------------------------------------- registrar


@external
def mint(to: address, token_id: uint256, record_hash: bytes32):
    """
    @dev Mints the title `token_id` to `to` with its record hash.
    """
    access_control._check_role(REGISTRAR_ROLE, msg.sender)
    assert to != empty(address), "CaliberNFT: mint to the zero address"
    assert record_hash != empty(bytes32), "CaliberNFT: empty record hash"
    assert self._owners[token_id] == empty(address), "CaliberNFT: token already minted"
    self._owners[token_id] = to
    self._balances[to] = unsafe_add(self._balances[to], 1)
    self.record_hash[token_id] = record_hash
    log IERC721.Transfer(sender=empty(address), receiver=to, token_id=token_id)
    log Minted(token_id=token_id, to=to, record_hash=record_hash)


@external
def update_record(token_id: uint256, record_hash: bytes32):
    """
    @dev Replaces the record hash (re-appraisal, insurance renewal).
    """
    access_control._check_role(REGISTRAR_ROLE, msg.sender)
    assert record_hash != empty(bytes32), "CaliberNFT: empty record hash"
    self._require_minted(token_id)
    self.record_hash[token_id] = record_hash
    log RecordUpdated(token_id=token_id, record_hash=record_hash)


# ---------------------------------------------------------------- loan manager


@external
def set_lien(token_id: uint256, active: bool):
    access_control._check_role(LOAN_MANAGER_ROLE, msg.sender)
    self._require_minted(token_id)
    self.lien[token_id] = active
    log LienSet(token_id=token_id, active=active)


@external
def foreclose(token_id: uint256):
    """
    @dev Moves the title to the protocol's custody address, lien or
         not (the lien blocks holders' transfers, not foreclosure),
         then clears the lien.
    """
    access_control._check_role(LOAN_MANAGER_ROLE, msg.sender)
    owner: address = self._require_minted(token_id)
    assert owner != protocol, "CaliberNFT: already in custody"
    self._move(owner, protocol, token_id)
    if self.lien[token_id]:
        self.lien[token_id] = False
        log LienSet(token_id=token_id, active=False)
    log Foreclosed(token_id=token_id, from_=owner, to=protocol)


# ---------------------------------------------------------------- internals


@internal
@view
def _require_minted(token_id: uint256) -> address:
    owner: address = self._owners[token_id]
    assert owner != empty(address), "CaliberNFT: invalid token ID"
    return owner


@internal
def _transfer(owner: address, to: address, token_id: uint256):
    current: address = self._require_minted(token_id)
    assert not self.lien[token_id], "CaliberNFT: lien"
    assert current == owner, "CaliberNFT: transfer from incorrect owner"
    assert to != empty(address), "CaliberNFT: transfer to the zero address"
    assert (
        msg.sender == owner or self.isApprovedForAll[owner][msg.sender] or self._approvals[token_id] == msg.sender
    ), "CaliberNFT: caller is not token owner or approved"
    self._move(owner, to, token_id)


@internal
def _move(owner: address, to: address, token_id: uint256):
    if self._approvals[token_id] != empty(address):
        self._approvals[token_id] = empty(address)
    self._balances[owner] = unsafe_sub(self._balances[owner], 1)
    self._balances[to] = unsafe_add(self._balances[to], 1)
    self._owners[token_id] = to
    log IERC721.Transfer(sender=owner, receiver=to, token_id=token_id)
