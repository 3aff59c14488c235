# pragma version ~=0.4.3
# pragma nonreentrancy off
"""
@title USDai
@custom:contract-name USDai
@license MIT
@notice The protocol's dollar token (ERC-20, 18 decimals) on snekmate's
        `erc20` module. Only minters (set by the owner; the deployer is
        owner and minter) mint and burn. snekmate's public `burn` and
        `burn_from` let any holder burn, so they are not exported: this
        contract's `burn` and `burn_from` require a minter.
"""


from ethereum.ercs import IERC20
implements: IERC20

from ethereum.ercs import IERC20Detailed
implements: IERC20Detailed

from snekmate.auth import ownable
initializes: ownable

from snekmate.tokens import erc20
initializes: erc20[ownable := ownable]

exports: (
    erc20.totalSupply,
    erc20.balanceOf,
    erc20.allowance,
    erc20.transfer,
    erc20.transferFrom,
    erc20.approve,
    erc20.name,
    erc20.symbol,
    erc20.decimals,
    erc20.permit,
    erc20.nonces,
    erc20.DOMAIN_SEPARATOR,
    erc20.eip712Domain,
    erc20.mint,
    erc20.set_minter,
    erc20.is_minter,
    ownable.owner,
    erc20.transfer_ownership,
    erc20.renounce_ownership,
)


@deploy
def __init__():
    ownable.__init__()
    erc20.__init__("USDai", "USDai", 18, "USDai", "1")


@external
def burn(amount: uint256):
    """
    @dev Burns `amount` of the caller's own tokens; the caller must be a minter.
    """
    assert erc20.is_minter[msg.sender], "USDai: caller is not a minter"
    erc20._burn(msg.sender, amount)


@external
def burn_from(owner: address, amount: uint256):
    """
    @dev Burns `amount` of `owner`'s tokens, spending `owner`'s allowance
         to the caller; the caller must be a minter.
    """
    assert erc20.is_minter[msg.sender], "USDai: caller is not a minter"
    erc20._spend_allowance(owner, msg.sender, amount)
    erc20._burn(owner, amount)
