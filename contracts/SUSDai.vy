# pragma version ~=0.4.3
# pragma nonreentrancy off
"""
@title Staked USDai
@custom:contract-name SUSDai
@license MIT
@notice An ERC-4626 vault over USDai whose shares (sUSDai) earn the
        interest of the protocol's GPU loans. No lender can gain from
        timing a deposit or an exit around a report: every price comes
        from one NAV that moves smoothly.

        Assets. `idle` is the USDai the vault holds, tracked internally:
        tokens sent to the vault directly are not counted, which defeats
        donation-based inflation attacks. `deployed` is the book value of
        assets outside the vault (loans, T-bills); deploying burns idle
        USDai and recalling mints it back (the vault is a USDai minter).

        NAV. `totalAssets() = idle + deployed + accrued() - locked_profit()`
        is the one price of a share: deposits, mints, every preview,
        `convertToShares`, `convertToAssets` and the redemption queue's
        payouts all use it (there is no separate deposit NAV: the former
        `deposit_nav` is gone). Conversions use one virtual share and one
        virtual asset (`x * (supply + 1) / (nav + 1)`) and round in the
        vault's favour: shares out and assets out down, assets in up.

        Accrual. `accrued() = accrued_interest + accrual_rate *
        (now - accrued_at)`: interest accrued by loans but not received
        yet, as last reported, streamed per second at the rate the
        operator reported, so the NAV rises between reports as the loans
        earn.

        Reports. `report(profit, accrued, rate, as_of)` mints `profit` USDai
        (interest received) into idle and restates the accrual. What the
        vault expected, `accrued()` just before, is already in the NAV;
        only the difference `profit + accrued - expected` moves it. A
        gain (a surprise) is locked; a loss is absorbed by locked profit
        first, and the rest lowers the NAV for every holder pro rata.

        Unlocking. Locked profit unlocks linearly to `unlock_end`:
        `locked_profit() = locked * (unlock_end - now) / (unlock_end -
        locked_at)`, rounded up (never a wei too early). A new gain G
        joins what is still locked, R, with a weighted-average end
        (Yearn V3): `unlock_end = now + (R * (unlock_end - now) + G *
        unlock_period) / (R + G)`; so every gain is fully unlocked at most
        `unlock_period` after it was locked, however often reports come.
        With `unlock_period` 0 gains count at once.

        Losses and recoveries. `write_down(amount)` books a loss on
        deployed assets (an impairment, a write-off), absorbed by locked
        profit first, then by holders pro rata; `write_up(amount)` books
        a recovery, locked like a surprise gain so nobody can time a
        deposit before a known recovery.

        Dead shares. The first deposit must exceed 10**6 wei; 10**6
        shares go to 0x...dEaD, so the supply can never return to zero,
        and with them one share per wei of any assets booked while no
        share existed (a report or write-up to the empty vault): the first
        depositor gets one share per wei paid, neither paying for those
        assets nor taking them.

        Exits. Shares leave through a FIFO queue: `request_redeem`
        escrows them in the vault (at least `min_redemption`, unless they
        are the caller's whole balance), the operator's `service` pays
        them out of `idle` at the NAV of the moment it runs, partially if
        `idle` runs short; queued shares keep their share of gains and
        losses until paid. `cancel_redeem` gives a request's unpaid shares
        back to its owner; `service` skips cancelled requests.

        Deviations from EIP-4626. `withdraw` and `redeem` revert (exits go
        through the queue), so `maxWithdraw` and `maxRedeem` return 0 and
        `previewWithdraw` / `previewRedeem` quote the current NAV, not a
        price anyone can get now: queue payouts are priced when serviced.
        The first deposit must exceed 10**6 wei, a minimum `maxDeposit`
        and `maxMint` cannot express; they return 0 only for the vault
        itself as receiver (refused: its balance is the queue's escrow).
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

# @dev The most queue entries (paid or skipped) one `service` call walks.
MAX_SERVICE: constant(uint256) = 256


# @dev `shares` is what is still unpaid; a request is done when it is 0,
# paid in full or cancelled (then `cancelled` says which).
struct Redemption:
    owner: address
    shares: uint256
    assets_paid: uint256
    cancelled: bool


asset: public(immutable(address))
_USDAI: immutable(IUSDai)
unlock_period: public(immutable(uint256))

idle: public(uint256)
deployed: public(uint256)

# @dev Interest accrued but not received, as of `accrued_at`, growing by
# `accrual_rate` wei per second (all three set by the last report).
accrued_interest: public(uint256)
accrued_at: public(uint256)
accrual_rate: public(uint256)

# @dev Profit locked as of `locked_at`, unlocking linearly to `unlock_end`.
locked: public(uint256)
locked_at: public(uint256)
unlock_end: public(uint256)

min_redemption: public(uint256)
redemptions: public(HashMap[uint256, Redemption])
queue_head: public(uint256)
queue_tail: public(uint256)
queued_shares: public(uint256)


event Reported:
    profit: uint256
    accrued: uint256
    rate: uint256
    gain: uint256
    loss: uint256
    locked: uint256

event WrittenDown:
    amount: uint256
    absorbed_by_locked: uint256
    deployed: uint256

event WrittenUp:
    amount: uint256
    deployed: uint256
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

event RedeemCancelled:
    id: indexed(uint256)
    owner: indexed(address)
    shares: uint256

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
    @param unlock_period_ Seconds over which a gain unlocks (0: at once).
    @param min_redemption_ The smallest redemption request, in shares
           (a holder's whole balance is accepted below it).
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
def _accrued() -> uint256:
    rate: uint256 = self.accrual_rate
    if rate == 0:
        return self.accrued_interest
    return self.accrued_interest + rate * (block.timestamp - self.accrued_at)


@internal
@view
def _locked_profit() -> uint256:
    locked: uint256 = self.locked
    if locked == 0:
        return 0
    end: uint256 = self.unlock_end
    if block.timestamp >= end:
        return 0
    # Rounded up: the NAV never counts a wei too early. locked_at <= now < end.
    return math._mul_div(locked, unsafe_sub(end, block.timestamp), unsafe_sub(end, self.locked_at), True)


@internal
@view
def _total_assets() -> uint256:
    gross: uint256 = self.idle + self.deployed + self._accrued()
    locked: uint256 = self._locked_profit()
    if locked >= gross:
        return 0
    return unsafe_sub(gross, locked)


@internal
def _lock(gain: uint256) -> uint256:
    """
    @dev Adds `gain` to the locked profit with a weighted-average unlock end.
    @return uint256 The profit locked now.
    """
    remaining: uint256 = self._locked_profit()
    if gain == 0 or unlock_period == 0:
        return remaining
    end: uint256 = block.timestamp + unlock_period
    if remaining != 0:
        # remaining != 0 means now < unlock_end, so the new end is after now.
        end = block.timestamp + (remaining * (self.unlock_end - block.timestamp) + gain * unlock_period) // (remaining + gain)
    locked: uint256 = remaining + gain
    self.locked = locked
    self.locked_at = block.timestamp
    self.unlock_end = end
    return locked


@internal
def _absorb(loss: uint256) -> (uint256, uint256):
    """
    @dev Takes as much of `loss` as it can from the locked profit (the unlock end stays).
    @return (uint256, uint256) The part absorbed, and the profit locked now.
    """
    remaining: uint256 = self._locked_profit()
    absorbed: uint256 = min(loss, remaining)
    if absorbed == 0:
        return 0, remaining
    locked: uint256 = unsafe_sub(remaining, absorbed)
    self.locked = locked
    self.locked_at = block.timestamp
    return absorbed, locked


@external
@view
def totalAssets() -> uint256:
    """
    @dev The NAV every price uses: idle + deployed + accrued() - locked_profit().
    """
    return self._total_assets()


@external
@view
def locked_profit() -> uint256:
    """
    @dev The part of past gains that has not unlocked yet (rounded up).
    """
    return self._locked_profit()


@external
@view
def accrued() -> uint256:
    """
    @dev Interest accrued but not received, now: accrued_interest + accrual_rate * (now - accrued_at).
    """
    return self._accrued()


# ---------------------------------------------------------------- conversions


@internal
@view
def _preview_deposit(assets: uint256) -> uint256:
    supply: uint256 = erc20.totalSupply
    if supply == 0:
        # One share per wei; the first DEAD_SHARES go to the dead address, which also gets one
        # share per wei of any assets booked before the first deposit (`_deposit`): the first
        # depositor neither pays for them nor takes them.
        return unsafe_sub(assets, DEAD_SHARES) if assets > DEAD_SHARES else 0
    return math._mul_div(assets, supply + 1, self._total_assets() + 1, False)


@internal
@view
def _preview_mint(shares: uint256) -> uint256:
    supply: uint256 = erc20.totalSupply
    if supply == 0:
        return shares + DEAD_SHARES  # one share per wei, and the dead shares (`_preview_deposit`)
    return math._mul_div(shares, self._total_assets() + 1, supply + 1, True)


@internal
@view
def _redeem_value(shares: uint256, total_assets: uint256, supply: uint256) -> uint256:
    return math._mul_div(shares, total_assets + 1, supply + 1, False)


@external
@view
def convertToShares(assets: uint256) -> uint256:
    return math._mul_div(assets, erc20.totalSupply + 1, self._total_assets() + 1, False)


@external
@view
def convertToAssets(shares: uint256) -> uint256:
    return self._redeem_value(shares, self._total_assets(), erc20.totalSupply)


@external
@view
def maxDeposit(receiver: address) -> uint256:
    """
    @dev 0 for the vault itself (refused); no cap otherwise. The first
         deposit's minimum (over 10**6 wei) is not expressed here.
    """
    if receiver == self:
        return 0
    return max_value(uint256)


@external
@view
def maxMint(receiver: address) -> uint256:
    """
    @dev 0 for the vault itself (refused); no cap otherwise.
    """
    if receiver == self:
        return 0
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
    """
    @dev What `shares` are worth at the current NAV (what `service` would pay now).
    """
    return self._redeem_value(shares, self._total_assets(), erc20.totalSupply)


@external
@view
def previewWithdraw(assets: uint256) -> uint256:
    """
    @dev The shares worth `assets` at the current NAV, rounded up.
    """
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
        # The assets already booked (interest reported, or a write-up, before anyone held a
        # share) are the dead shares' at one wei each: the price starts at one and stays there.
        erc20._mint(DEAD, DEAD_SHARES + self._total_assets())
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
    @dev Escrows `shares` of the caller in the vault and queues them. At
         least `min_redemption`, unless they are the caller's whole balance.
    @return uint256 The request id.
    """
    assert shares != 0, "sUSDai: zero shares"
    balance: uint256 = erc20.balanceOf[msg.sender]
    assert shares <= balance, "sUSDai: exceeds balance"
    assert shares == balance or shares >= self.min_redemption, "sUSDai: below minimum"
    erc20._transfer(msg.sender, self, shares)
    request_id: uint256 = self.queue_tail
    # Field by field: assets_paid and cancelled start at zero, and writing a zero slot costs gas.
    self.redemptions[request_id].owner = msg.sender
    self.redemptions[request_id].shares = shares
    self.queue_tail = request_id + 1
    self.queued_shares += shares
    log RedeemRequested(id=request_id, owner=msg.sender, shares=shares)
    return request_id


@external
def cancel_redeem(request_id: uint256):
    """
    @dev Gives the request's unpaid shares back to its owner (the only
         caller allowed); what was paid stays paid. `service` skips it.
    """
    assert request_id < self.queue_tail, "sUSDai: unknown request"
    assert self.redemptions[request_id].owner == msg.sender, "sUSDai: not the request's owner"
    assert not self.redemptions[request_id].cancelled, "sUSDai: request cancelled"
    shares: uint256 = self.redemptions[request_id].shares
    assert shares != 0, "sUSDai: request completed"
    self.redemptions[request_id].shares = 0
    self.redemptions[request_id].cancelled = True
    self.queued_shares -= shares
    erc20._transfer(self, msg.sender, shares)
    log RedeemCancelled(id=request_id, owner=msg.sender, shares=shares)


@external
@view
def position(request_id: uint256) -> uint256:
    """
    @dev The number of queue entries ahead of `request_id`: cancelled
         requests that `service` has not skipped yet count, so this is
         an upper bound on the waiting requests ahead. Reverts for an
         unknown, a cancelled or a completed request.
    """
    assert request_id < self.queue_tail, "sUSDai: unknown request"
    assert not self.redemptions[request_id].cancelled, "sUSDai: request cancelled"
    head: uint256 = self.queue_head
    assert request_id >= head, "sUSDai: request completed"
    return request_id - head


@external
def service(max_requests: uint256) -> uint256:
    """
    @dev Pays up to `max_requests` requests from the head of the queue,
         in order, at the current NAV, out of `idle`. A request that
         `idle` does not cover is paid in part and stays at the head.
         Cancelled requests on the way are skipped (the head moves past
         them, no event): they count neither towards `max_requests` nor
         towards the result. One call walks at most MAX_SERVICE entries.
    @return uint256 The number of requests paid in full.
    """
    access_control._check_role(OPERATOR_ROLE, msg.sender)
    head: uint256 = self.queue_head
    tail: uint256 = self.queue_tail
    idle: uint256 = self.idle
    total_assets: uint256 = self._total_assets()
    supply: uint256 = erc20.totalSupply
    burnt: uint256 = 0
    paid: uint256 = 0
    completed: uint256 = 0
    for _: uint256 in range(MAX_SERVICE):
        if head == tail or paid == max_requests:
            break
        shares: uint256 = self.redemptions[head].shares
        if shares == 0:
            # Cancelled (a request paid in full is already behind the head).
            head += 1
            continue
        if idle == 0:
            break
        assets: uint256 = self._redeem_value(shares, total_assets, supply)
        remaining: uint256 = 0
        if assets > idle:
            # Partial fill: the most shares whose value idle covers.
            part: uint256 = math._mul_div(idle, supply + 1, total_assets + 1, False)
            if part == 0:
                break
            assets = self._redeem_value(part, total_assets, supply)
            remaining = shares - part
            shares = part
        owner: address = self.redemptions[head].owner
        self.redemptions[head].shares = remaining
        self.redemptions[head].assets_paid += assets
        erc20._burn(self, shares)
        idle -= assets
        total_assets -= assets
        supply -= shares
        burnt += shares
        paid += 1
        if assets != 0:
            assert extcall _USDAI.transfer(owner, assets, default_return_value=True), "sUSDai: transfer failed"
        log RedeemServiced(id=head, owner=owner, shares=shares, assets=assets, remaining_shares=remaining)
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
def report(profit: uint256, accrued: uint256, rate: uint256, as_of: uint256):
    """
    @dev Books an epoch's interest. `profit`: interest received, in wei of
         USDai, minted into idle. `accrued`: interest accrued but not
         received, in wei, as of `as_of` (the moment the books closed the
         epoch: the transaction is mined later, and the interest of the
         seconds between counts at `rate`; a moment after the block's
         counts as the block's). `rate`: how
         fast it accrues from `as_of` on, in wei per second. Against
         `expected = accrued()` just before, `profit + accrued() after -
         expected` is a gain, locked to unlock linearly, or a loss,
         absorbed by locked profit first and by every holder pro rata
         for the rest.
    """
    access_control._check_role(OPERATOR_ROLE, msg.sender)
    # A clock ahead of the chain's counts as now.
    since: uint256 = min(as_of, block.timestamp)
    expected: uint256 = self._accrued()
    booked: uint256 = profit + accrued + rate * (block.timestamp - since)
    gain: uint256 = 0
    loss: uint256 = 0
    if booked >= expected:
        gain = unsafe_sub(booked, expected)
    else:
        loss = unsafe_sub(expected, booked)
    if profit != 0:
        extcall _USDAI.mint(self, profit)
        self.idle += profit
    self.accrued_interest = accrued
    self.accrued_at = since
    self.accrual_rate = rate
    locked: uint256 = 0
    if loss != 0:
        locked = self._absorb(loss)[1]
    else:
        locked = self._lock(gain)
    log Reported(profit=profit, accrued=accrued, rate=rate, gain=gain, loss=loss, locked=locked)


@external
def write_down(amount: uint256):
    """
    @dev Books a loss of `amount` wei on deployed assets (an impairment,
         a write-off): absorbed by locked profit first, then by every
         holder pro rata.
    """
    access_control._check_role(OPERATOR_ROLE, msg.sender)
    deployed: uint256 = self.deployed
    assert amount <= deployed, "sUSDai: not enough deployed"
    deployed = unsafe_sub(deployed, amount)
    self.deployed = deployed
    absorbed: uint256 = self._absorb(amount)[0]
    log WrittenDown(amount=amount, absorbed_by_locked=absorbed, deployed=deployed)


@external
def write_up(amount: uint256):
    """
    @dev Books a recovery of `amount` wei on deployed assets (an
         impairment reversed), locked like a surprise gain.
    """
    access_control._check_role(OPERATOR_ROLE, msg.sender)
    deployed: uint256 = self.deployed + amount
    self.deployed = deployed
    locked: uint256 = self._lock(amount)
    log WrittenUp(amount=amount, deployed=deployed, locked=locked)


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
