"""Deploy the contracts and grant their roles to the protocol operator.

Run once per JSON-RPC chain (``manage.py chain_deploy``), and at every start
of the embedded chain, where the same deployer, nonces and block times give
the same addresses each time.
"""

from django.conf import settings
from eth_account import Account
from web3 import Web3

from contracts import artifact
from financing.chain.client import Chain, ChainError, custody_key

OPERATOR_ETH = 10**23  # the embedded operator's gas money


def _send(chain: Chain, tx: dict, key: bytes, step: int) -> dict:
    sender = Account.from_key(key).address
    base_fee = chain.w3.eth.get_block("latest").get("baseFeePerGas", 10**9)
    tx = {
        **tx,
        "nonce": chain.w3.eth.get_transaction_count(sender, "pending"),
        "gas": chain.w3.eth.estimate_gas({**tx, "from": sender}) * 12 // 10 + 10_000,
        "maxFeePerGas": base_fee * 2 + 10**9,
        "maxPriorityFeePerGas": 10**9,
        "chainId": chain.chain_id,
        "type": 2,
    }
    if chain.embedded:
        chain.at(chain.genesis_timestamp + step)
    try:
        signed = Account.sign_transaction(tx, key)
        chain.broadcast("0x" + signed.raw_transaction.hex().removeprefix("0x"))
        receipt = chain.w3.eth.wait_for_transaction_receipt(signed.hash, timeout=settings.CHAIN_RECEIPT_TIMEOUT_SECONDS)
    finally:
        if chain.embedded:
            chain.at(None)
    if receipt["status"] != 1:
        raise ChainError(f"deployment step {step} reverted", retryable=False)
    return receipt


def deploy(chain: Chain) -> dict[str, str]:
    """Deploy USDai, sUSDai, CaliberNFT and RevenueAnchor; returns their addresses."""
    key = custody_key(0)
    operator = Account.from_key(key).address
    step = 0
    if chain.embedded:
        step += 1
        chain.at(chain.genesis_timestamp + step)
        chain.fund(operator, OPERATOR_ETH)
        chain.at(None)

    def create(name: str, *args) -> str:
        nonlocal step
        step += 1
        build = artifact(name)
        factory = chain.w3.eth.contract(abi=build["abi"], bytecode=build["bytecode"])
        tx = factory.constructor(*args).build_transaction({"from": operator, "gas": 0, "nonce": 0})
        tx = {"data": tx["data"], "value": 0}
        return Web3.to_checksum_address(_send(chain, tx, key, step)["contractAddress"])

    addresses = {"USDai": create("USDai")}
    addresses["SUSDai"] = create(
        "SUSDai", addresses["USDai"], settings.VAULT_UNLOCK_SECONDS, int(settings.VAULT_MIN_REDEMPTION * 10**18)
    )
    addresses["CaliberNFT"] = create("CaliberNFT", settings.CALIBER_BASE_URI, operator)
    addresses["RevenueAnchor"] = create("RevenueAnchor")
    chain.use(addresses)

    def call(name: str, function: str, *args) -> None:
        nonlocal step
        step += 1
        fn = getattr(chain.contract(name).functions, function)(*args)
        tx = fn.build_transaction(
            {"from": operator, "gas": 0, "nonce": 0, "maxFeePerGas": 0, "maxPriorityFeePerGas": 0}
        )
        _send(chain, {"to": tx["to"], "data": tx["data"], "value": 0}, key, step)

    def role(name: str, role_name: str) -> bytes:
        return getattr(chain.contract(name).functions, role_name)().call()

    call("USDai", "set_minter", addresses["SUSDai"], True)
    call("SUSDai", "grantRole", role("SUSDai", "OPERATOR_ROLE"), operator)
    call("CaliberNFT", "grantRole", role("CaliberNFT", "REGISTRAR_ROLE"), operator)
    call("CaliberNFT", "grantRole", role("CaliberNFT", "LOAN_MANAGER_ROLE"), operator)
    call("RevenueAnchor", "grantRole", role("RevenueAnchor", "OPERATOR_ROLE"), operator)
    return addresses
