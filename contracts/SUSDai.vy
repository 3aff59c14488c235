# pragma version ~=0.4.3
# pragma nonreentrancy off
"""
@title Staked USDai
@custom:contract-name SUSDai
@license MIT
@notice An ERC-4626 vault over USDai whose shares (sUSDai) earn the
        interest of the protocol's GPU loans.

        Assets. `idle` is the USDai the vault holds, tracked internally:
        tokens sent to the vault directly are not counted, which defeats
        donation-based inflation attacks. `deployed` is the book value of
        assets outside the vault (loans, T-bills); deploying burns idle
        USDai and recalling mints it back (the vault is a USDai minter).
        `accrued_interest` is interest accrued by loans but not yet
        received, as last reported.

        Prices. Redemptions use the conservative NAV
        `totalAssets() = idle + deployed - locked_profit()`; deposits use
        the optimistic NAV `totalAssets() + accrued_interest`, so a new
        depositor pays for interest accrued before they arrived. Both
        convert with one virtual share and one virtual asset
        (`x * (supply + 1) / (nav + 1)`) and round in the vault's favour.

        Profit streaming. `report(profit, accrued)` mints `profit` USDai
        to the vault and locks it; the lock decays linearly to zero over
        `unlock_period` seconds, so the share price rises smoothly and
        never jumps on a report.

        Dead shares. The first deposit must exceed 10**6 wei; 10**6
        shares go to 0x...dEaD, so the supply can never return to zero.

        Exits. `withdraw` and `redeem` revert: shares leave through a FIFO
        queue (`request_redeem`, then the operator's `service`), paid out
        of `idle` at the conservative price when serviced, partially if
        `idle` runs short.
"""


from ethereum.ercs import IERC20
implements: IERC20

from ethereum.ercs import IERC20Detailed
implements: IERC20Detailed

from ethereum.ercs import IERC4626
implements: IERC4626

from snekmate.auth.interfaces import IAccessControl
implements: IAccessControl

from snekmate.utils import math

from snekmate.auth import ownable
initializes: ownable

from snekmate.tokens import erc20
initializes: erc20[ownable := ownable]

from snekmate.auth import access_control
initializes: access_control

# @dev The share token is snekmate's `erc20` without its mint and burn
# (shares are minted by deposits and burnt by the queue only), and
# without `symbol`: snekmate caps it at 5 characters and "sUSDai" has 6.
exports: (
    erc20.totalSupply,
    erc20.balanceOf,
    erc20.allowance,
    erc20.transfer,
    erc20.transferFrom,
    erc20.approve,
    erc20.name,
    erc20.decimals,
    erc20.permit,
    erc20.nonces,
    erc20.DOMAIN_SEPARATOR,
    erc20.eip712Domain,
    access_control.DEFAULT_ADMIN_ROLE,
    access_control.supportsInterface,
    access_control.hasRole,
    access_control.getRoleAdmin,
    access_control.grantRole,
    access_control.revokeRole,
    access_control.renounceRole,
    access_control.set_role_admin,
)


interface IUSDai:
    def transfer(to: address, amount: uint256) -> bool: nonpayable
    def transferFrom(owner: address, to: address, amount: uint256) -> bool: nonpayable
    def mint(owner: address, amount: uint256): nonpayable
    def burn(amount: uint256): nonpayable


OPERATOR_ROLE: public(constant(bytes32)) = keccak256("OPERATOR_ROLE")

symbol: public(constant(String[6])) = "sUSDai"

DEAD: public(constant(address)) = 0x000000000000000000000000000000000000dEaD
DEAD_SHARES: public(constant(uint256)) = 10**6

# @dev The most requests one `service` call walks.
MAX_SERVICE: constant(uint256) = 256


struct Redemption:
    owner: address
    shares: uint256
    assets_paid: uint256


asset: public(immutable(address))
_USDAI: immutable(IUSDai)
unlock_period: public(immutable(uint256))

idle: public(uint256)
deployed: public(uint256)
accrued_interest: public(uint256)

# @dev Profit locked at the last report, and when that was.
locked: public(uint256)
last_report: public(uint256)

min_redemption: public(uint256)
redemptions: public(HashMap[uint256, Redemption])
queue_head: public(uint256)
queue_tail: public(uint256)
queued_shares: public(uint256)


event Reported:
    profit: uint256
    accrued: uint256
    locked: uint256

event RedeemRequested:
    id: indexed(uint256)
    owner: indexed(address)
    shares: uint256

event RedeemServiced:
    id: indexed(uint256)
    owner: indexed(address)
    shares: uint256
    assets: uint256
    remaining_shares: uint256

event Deployed:
    amount: uint256
    deployed: uint256

event Recalled:
    amount: uint256
    deployed: uint256

event MinRedemptionSet:
    shares: uint256


@deploy
def __init__(asset_: address, unlock_period_: uint256, min_redemption_: uint256):
    """
    @param asset_ The USDai token; the deployer must make this vault a minter.
    @param unlock_period_ Seconds over which a reported profit unlocks (0: at once).
    @param min_redemption_ The smallest redemption request, in shares.
    """
    assert asset_ != empty(address), "sUSDai: asset is the zero address"
    asset = asset_
    _USDAI = IUSDai(asset_)
    unlock_period = unlock_period_
    self.min_redemption = min_redemption_
    ownable.__init__()
    # The module's own `symbol` is not exported (see above).
    erc20.__init__("Staked USDai", "", 18, "Staked USDai", "1")
    access_control.__init__()


# ---------------------------------------------------------------- NAV


@internal
@view
def _locked_profit() -> uint256:
    locked: uint256 = self.locked
    if locked == 0:
        return 0
    elapsed: uint256 = block.timestamp - self.last_report
    if elapsed >= unlock_period:
        return 0
    # Rounded up: the conservative NAV never counts a wei too early.
    return math._mul_div(locked, unlock_period - elapsed, unlock_period, True)


@internal
@view
def _total_assets() -> uint256:
    gross: uint256 = self.idle + self.deployed
    locked: uint256 = self._locked_profit()
    if locked >= gross:
        return 0
    return unsafe_sub(gross, locked)


@internal
@view
def _deposit_nav() -> uint256:
    return self._total_assets() + self.accrued_interest


@external
@view
def totalAssets() -> uint256:
    """
    @dev The conservative NAV: idle + deployed - locked profit.
    """
    return self._total_assets()


@external
@view
def locked_profit() -> uint256:
    """
    @dev The part of reported profit that has not unlocked yet.
    """
    return self._locked_profit()


@external
@view
def deposit_nav() -> uint256:
    """
    @dev The optimistic NAV deposits are priced at: totalAssets() + accrued_interest.
    """
    return self._deposit_nav()


# ---------------------------------------------------------------- conversions


@internal
@view
def _preview_deposit(assets: uint256) -> uint256:
    supply: uint256 = erc20.totalSupply
    shares: uint256 = math._mul_div(assets, supply + 1, self._deposit_nav() + 1, False)
    if supply == 0:
        # The first DEAD_SHARES go to the dead address.
        return shares - DEAD_SHARES if shares > DEAD_SHARES else 0
    return shares


@internal
@view
def _preview_mint(shares: uint256) -> uint256:
    supply: uint256 = erc20.totalSupply
    minted: uint256 = shares + DEAD_SHARES if supply == 0 else shares
    return math._mul_div(minted, self._deposit_nav() + 1, supply + 1, True)


@internal
@view
def _redeem_value(shares: uint256, total_assets: uint256, supply: uint256) -> uint256:
    return math._mul_div(shares, total_assets + 1, supply + 1, False)


@external
@view
def convertToShares(assets: uint256) -> uint256:
    return math._mul_div(assets, erc20.totalSupply + 1, self._deposit_nav() + 1, False)


@external
@view
def convertToAssets(shares: uint256) -> uint256:
    return self._redeem_value(shares, self._total_assets(), erc20.totalSupply)


@external
@view
def maxDeposit(receiver: address) -> uint256:
    return max_value(uint256)


@external
@view
def maxMint(receiver: address) -> uint256:
    return max_value(uint256)


@external
@view
def previewDeposit(assets: uint256) -> uint256:
    return self._preview_deposit(assets)


@external
@view
def previewMint(shares: uint256) -> uint256:
    return self._preview_mint(shares)


@external
@view
def previewRedeem(shares: uint256) -> uint256:
    return self._redeem_value(shares, self._total_assets(), erc20.totalSupply)


@external
@view
def previewWithdraw(assets: uint256) -> uint256:
    return math._mul_div(assets, erc20.totalSupply + 1, self._total_assets() + 1, True)


@external
@view
def maxWithdraw(owner: address) -> uint256:
    return 0


@external
@view
def maxRedeem(owner: address) -> uint256:
    return 0


# ---------------------------------------------------------------- deposits


@external
def deposit(assets: uint256, receiver: address) -> uint256:
    shares: uint256 = self._preview_deposit(assets)
    self._deposit(assets, shares, receiver)
    return shares


@external
def mint(shares: uint256, receiver: address) -> uint256:
    assets: uint256 = self._preview_mint(shares)
    self._deposit(assets, shares, receiver)
    return assets


@internal
def _deposit(assets: uint256, shares: uint256, receiver: address):
    # The vault's own balance is the redemption escrow.
    assert receiver != self, "sUSDai: receiver is the vault"
    if erc20.totalSupply == 0:
        assert assets > DEAD_SHARES, "sUSDai: first deposit must exceed 10**6 wei"
        erc20._mint(DEAD, DEAD_SHARES)
    assert shares != 0, "sUSDai: zero shares"
    assert extcall _USDAI.transferFrom(msg.sender, self, assets, default_return_value=True), "sUSDai: transfer failed"
    self.idle += assets
    erc20._mint(receiver, shares)
    log IERC4626.Deposit(sender=msg.sender, owner=receiver, assets=assets, shares=shares)


@external
def withdraw(assets: uint256, receiver: address, owner: address) -> uint256:
    raise "sUSDai: use the redemption queue"


@external
def redeem(shares: uint256, receiver: address, owner: address) -> uint256:
    raise "sUSDai: use the redemption queue"


# ---------------------------------------------------------------- redemption queue


@external
def request_redeem(shares: uint256) -> uint256:
    """
    @dev Escrows `shares` of the caller in the vault and queues them.
    @return uint256 The request id.
    """
    assert shares != 0, "sUSDai: zero shares"
    assert shares >= self.min_redemption, "sUSDai: below minimum"
    assert shares <= erc20.balanceOf[msg.sender], "sUSDai: exceeds balance"
    erc20._transfer(msg.sender, self, shares)
    request_id: uint256 = self.queue_tail
    self.redemptions[request_id] = Redemption(owner=msg.sender, shares=shares, assets_paid=0)
    self.queue_tail = request_id + 1
    self.queued_shares += shares
    log RedeemRequested(id=request_id, owner=msg.sender, shares=shares)
    return request_id


@external
@view
def position(request_id: uint256) -> uint256:
    """
    @dev The number of waiting requests ahead of `request_id`.
    """
    assert request_id < self.queue_tail, "sUSDai: unknown request"
    assert request_id >= self.queue_head, "sUSDai: request completed"
    return request_id - self.queue_head


@external
def service(max_requests: uint256) -> uint256:
    """
    @dev Pays up to `max_requests` requests from the head of the queue,
         in order, at the conservative price, out of `idle`. A request
         that `idle` does not cover is paid in part and stays at the head.
    @return uint256 The number of requests completed.
    """
    access_control._check_role(OPERATOR_ROLE, msg.sender)
    head: uint256 = self.queue_head
    tail: uint256 = self.queue_tail
    idle: uint256 = self.idle
    total_assets: uint256 = self._total_assets()
    supply: uint256 = erc20.totalSupply
    burnt: uint256 = 0
    completed: uint256 = 0
    for _: uint256 in range(min(max_requests, MAX_SERVICE), bound=MAX_SERVICE):
        if head == tail or idle == 0:
            break
        request: Redemption = self.redemptions[head]
        shares: uint256 = request.shares
        assets: uint256 = self._redeem_value(shares, total_assets, supply)
        if assets > idle:
            # Partial fill: the most shares whose value idle covers.
            shares = math._mul_div(idle, supply + 1, total_assets + 1, False)
            assets = self._redeem_value(shares, total_assets, supply)
            if shares == 0:
                break
        remaining: uint256 = request.shares - shares
        self.redemptions[head] = Redemption(owner=request.owner, shares=remaining, assets_paid=request.assets_paid + assets)
        erc20._burn(self, shares)
        idle -= assets
        total_assets -= assets
        supply -= shares
        burnt += shares
        if assets != 0:
            assert extcall _USDAI.transfer(request.owner, assets, default_return_value=True), "sUSDai: transfer failed"
        log RedeemServiced(id=head, owner=request.owner, shares=shares, assets=assets, remaining_shares=remaining)
        if remaining != 0:
            break
        head += 1
        completed += 1
    self.queue_head = head
    self.idle = idle
    self.queued_shares -= burnt
    return completed


@external
def set_min_redemption(shares: uint256):
    access_control._check_role(access_control.DEFAULT_ADMIN_ROLE, msg.sender)
    self.min_redemption = shares
    log MinRedemptionSet(shares=shares)


# ---------------------------------------------------------------- operator


@external
def report(profit: uint256, accrued: uint256):
    """
    @dev Mints `profit` USDai to the vault and locks it, to unlock linearly
         over `unlock_period`; records `accrued` as the interest accrued
         but not yet received.
    """
    access_control._check_role(OPERATOR_ROLE, msg.sender)
    locked: uint256 = self._locked_profit() + profit
    if profit != 0:
        extcall _USDAI.mint(self, profit)
        self.idle += profit
    self.locked = locked
    self.last_report = block.timestamp
    self.accrued_interest = accrued
    log Reported(profit=profit, accrued=accrued, locked=locked)


@external
def deploy(amount: uint256):
    """
    @dev Moves `amount` from idle to deployed, burning the USDai.
    """
    access_control._check_role(OPERATOR_ROLE, msg.sender)
    idle: uint256 = self.idle
    assert amount <= idle, "sUSDai: not enough idle"
    self.idle = unsafe_sub(idle, amount)
    deployed: uint256 = self.deployed + amount
    self.deployed = deployed
    extcall _USDAI.burn(amount)
    log Deployed(amount=amount, deployed=deployed)


@external
def recall(amount: uint256):
    """
    @dev Moves `amount` from deployed back to idle, minting the USDai.
    """
    access_control._check_role(OPERATOR_ROLE, msg.sender)
    deployed: uint256 = self.deployed
    assert amount <= deployed, "sUSDai: not enough deployed"
    deployed = unsafe_sub(deployed, amount)
    self.deployed = deployed
    self.idle += amount
    extcall _USDAI.mint(self, amount)
    log Recalled(amount=amount, deployed=deployed)
