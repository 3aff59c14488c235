"""The chain as a user's own wallet sees it: calls to sign elsewhere, and the logs to watch.

- ``unsigned_call``: a contract call as an EIP-1193 ``eth_sendTransaction``
  parameter (to, data, value 0, from the user's address); the user's wallet
  adds gas, fees and the nonce and signs it. Nothing is signed here.
- ``contract_logs``: the decoded events of our contracts in a block range
  (``eth_getLogs``), each with its ``tx_hash`` and ``log_index``.
- ``transaction_from``: who sent a transaction (None while the node does not
  know it).

Amounts cross as integer wei, as everywhere in the adapter.
"""

from dataclasses import dataclass

from web3.exceptions import TransactionNotFound

from financing.chain.client import Chain, ChainError, _hex, _jsonable, checksum


@dataclass(frozen=True)
class UnsignedTx:
    """One ``eth_sendTransaction`` parameter object (hex strings, as EIP-1193 takes them)."""

    sender: str  # "from"
    to: str
    data: str
    value: str = "0x0"
    chain_id: int = 0
    label: str = ""  # what the page says while the wallet asks

    def as_request(self) -> dict:
        return {"from": self.sender, "to": self.to, "data": self.data, "value": self.value}


@dataclass(frozen=True)
class ChainLog:
    contract: str
    event: str
    args: dict  # integers as strings, addresses EIP-55
    tx_hash: str
    log_index: int
    block_number: int
    block_hash: str


def unsigned_call(
    chain: Chain, *, sender: str, contract: str, function: str, args: list, label: str = ""
) -> UnsignedTx:
    """``contract.function(*args)`` from ``sender``, ABI-encoded, to be signed by the user's wallet."""
    try:
        data = chain.contract(contract).encode_abi(function, args=args)
    except ChainError:
        raise
    except Exception as exc:
        raise ChainError(f"{contract}.{function}: {exc}", retryable=False) from exc
    return UnsignedTx(
        sender=checksum(sender),
        to=chain.addresses[contract],
        data=_hex(bytes.fromhex(data.removeprefix("0x"))),
        chain_id=chain.chain_id,
        label=label,
    )


def contract_logs(chain: Chain, *, from_block: int, to_block: int, names: tuple[str, ...]) -> list[ChainLog]:
    """Every event of the contracts ``names`` in blocks ``[from_block, to_block]``, in chain order."""
    if to_block < from_block:
        return []
    by_address = {chain.addresses[name].lower(): name for name in names}
    try:
        raw = chain.w3.eth.get_logs(
            {"fromBlock": from_block, "toBlock": to_block, "address": [chain.addresses[n] for n in names]}
        )
    except Exception as exc:
        raise ChainError(f"eth_getLogs: {exc}", retryable=True) from exc
    out = []
    for log in raw:
        name = by_address.get(log["address"].lower())
        if name is None:
            continue
        for event in chain.contract(name).events:
            try:
                decoded = event().process_log(log)
            except Exception:  # noqa: S112 - not this event
                continue
            args = {
                k: checksum(v) if isinstance(v, str) and len(v) == 42 else _jsonable(v)
                for k, v in decoded["args"].items()
            }
            out.append(
                ChainLog(
                    contract=name,
                    event=decoded["event"],
                    args=args,
                    tx_hash=_hex(log["transactionHash"]),
                    log_index=log["logIndex"],
                    block_number=log["blockNumber"],
                    block_hash=_hex(log["blockHash"]),
                )
            )
            break
    return sorted(out, key=lambda log: (log.block_number, log.log_index))


def transaction_from(chain: Chain, tx_hash: str) -> str | None:
    """The sender of ``tx_hash``, or None when the node does not know the transaction (yet)."""
    try:
        tx = chain.w3.eth.get_transaction(tx_hash)
    except TransactionNotFound:
        return None
    except Exception as exc:
        raise ChainError(f"eth_getTransactionByHash: {exc}", retryable=True) from exc
    return checksum(tx["from"])
