"""The Hardhat node of tests/hardhat_node.py is a real chain: it signs nothing for us, mines, and keeps balances."""

from eth_account import Account
from web3 import Web3

from tests.hardhat_node import CHAIN_ID, HARDHAT_KEYS


def test_locally_signed_transfer_is_mined_and_credited(hardhat_rpc_url):
    w3 = Web3(Web3.HTTPProvider(hardhat_rpc_url, request_kwargs={"timeout": 30}))
    assert w3.eth.chain_id == CHAIN_ID == 31337

    sender = Account.from_key(HARDHAT_KEYS[0])
    assert sender.address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    recipient = Account.create().address
    assert w3.eth.get_balance(recipient) == 0

    amount = Web3.to_wei(1, "ether")
    tx = {
        "chainId": CHAIN_ID,
        "nonce": w3.eth.get_transaction_count(sender.address, "pending"),
        "to": recipient,
        "value": amount,
        "gas": 21_000,
        "maxFeePerGas": 2 * w3.eth.get_block("latest")["baseFeePerGas"] + Web3.to_wei(1, "gwei"),
        "maxPriorityFeePerGas": Web3.to_wei(1, "gwei"),
        "type": 2,
    }
    signed = sender.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)

    assert receipt["status"] == 1
    assert receipt["from"] == sender.address
    assert receipt["to"] == recipient
    assert w3.eth.get_balance(recipient) == amount
