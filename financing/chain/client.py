"""web3.py behind one small interface: frozen dataclasses out, typed errors.

Keys: the protocol operator signs with ``CHAIN_SIGNER_KEY``; a user's
custodial wallet key is ``keccak(CHAIN_CUSTODY_SEED ‖ index)``, derived when
needed and never stored.
"""

import re
import threading
import time
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from functools import cache

from django.conf import settings
from eth_account import Account
from eth_account.typed_transactions import TypedTransaction
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import BlockNotFound, ContractLogicError, TimeExhausted, TransactionNotFound

from contracts import artifact
from core.money import MICRO, SHARE

WEI_PER_USD = 10**18
WEI_PER_MICRO = 10**12
MAX_UINT = 2**256 - 1


class ChainError(Exception):
    """The chain could not be reached or refused a transaction.

    ``retryable`` says whether trying again later can help (RPC down, timeout)
    or not (the call reverts).
    """

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


class Reverted(ChainError):
    def __init__(self, message: str):
        super().__init__(message, retryable=False)


@dataclass(frozen=True)
class Signed:
    nonce: int
    tx_hash: str
    raw: str  # 0x-prefixed hex
    max_fee: int = 0  # maxFeePerGas, wei
    tip: int = 0  # maxPriorityFeePerGas, wei


@dataclass(frozen=True)
class Receipt:
    tx_hash: str
    block_number: int
    block_timestamp: int
    gas_used: int
    ok: bool
    events: list[dict] = field(default_factory=list)  # [{"event": name, "args": {...}, "log_index": n}]
    block_hash: str = ""  # "0x…" of the block the receipt is in


def usd_to_wei(amount: Decimal) -> int:
    """USD (at most 6 decimals) as USDai wei; refuses a fraction of a micro-dollar."""
    micros = Decimal(amount) / MICRO
    if micros != micros.to_integral_value():
        raise ValueError(f"{amount} has more than 6 decimal places")
    return int(micros) * WEI_PER_MICRO


def rate_wei(usd_per_second: Decimal) -> int:
    """A rate in USD a second as wei a second, rounded down (the vault never counts income early)."""
    return int(Decimal(usd_per_second) * 10**18)


def wei_to_usd(wei: int) -> Decimal:
    """USDai wei as USD, rounded down to the micro-dollar."""
    return (Decimal(wei) / WEI_PER_USD).quantize(MICRO, rounding=ROUND_DOWN)


def shares(wei: int) -> Decimal:
    return Decimal(wei) * SHARE


def shares_wei(amount: Decimal) -> int:
    value = Decimal(amount) / SHARE
    if value != value.to_integral_value():
        raise ValueError(f"{amount} has more than 18 decimal places")
    return int(value)


def is_checksum_address(value: str) -> bool:
    return Web3.is_checksum_address(value)


def custody_key(index: int) -> bytes:
    if index == 0:
        return bytes.fromhex(settings.CHAIN_SIGNER_KEY.removeprefix("0x"))
    return keccak(settings.CHAIN_CUSTODY_SEED.encode() + index.to_bytes(32, "big"))


@cache
def _address(key: bytes) -> str:
    return Account.from_key(key).address


def address_for(index: int) -> str:
    return _address(custody_key(index))


def _jsonable(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    return value


def _retryable(exc: Exception) -> bool:
    text = str(exc).lower()
    return isinstance(exc, (ConnectionError, TimeoutError, OSError, TimeExhausted)) or any(
        word in text for word in ("connection", "timed out", "timeout", "503", "502", "429")
    )


_PYEVM_NONCE = re.compile(r"invalid transaction nonce: expected (\d+), but got (\d+)")


def _nonce_used(text: str) -> bool:
    match = _PYEVM_NONCE.search(text)
    return match is not None and int(match[2]) < int(match[1])


def _hex(value) -> str:
    return "0x" + bytes(value).hex().removeprefix("0x")


def _signed(tx: dict, key: bytes) -> Signed:
    signed = Account.sign_transaction(tx, key)
    return Signed(
        nonce=tx["nonce"],
        tx_hash="0x" + signed.hash.hex().removeprefix("0x"),
        raw="0x" + signed.raw_transaction.hex().removeprefix("0x"),
        max_fee=tx["maxFeePerGas"],
        tip=tx["maxPriorityFeePerGas"],
    )


class Chain:
    """One chain: contracts by name, reads, signing, broadcasting, receipts."""

    embedded = False

    def __init__(self, w3: Web3):
        self.w3 = w3
        self.addresses: dict[str, str] = {}
        self._contracts: dict = {}
        try:
            self.chain_id = w3.eth.chain_id
        except Exception as exc:
            raise ChainError(f"RPC unreachable: {exc}", retryable=True) from exc

    # --- contracts -----------------------------------------------------------------

    def use(self, addresses: dict[str, str]) -> None:
        self.addresses = dict(addresses)
        self._contracts.clear()

    def contract(self, name: str):
        if name not in self._contracts:
            if name not in self.addresses:
                raise ChainError(f"{name} is not deployed on chain {self.chain_id}", retryable=False)
            self._contracts[name] = self.w3.eth.contract(address=self.addresses[name], abi=artifact(name)["abi"])
        return self._contracts[name]

    def call(self, name: str, function: str, *args):
        try:
            return getattr(self.contract(name).functions, function)(*args).call()
        except ContractLogicError as exc:
            raise Reverted(f"{name}.{function} reverted: {exc}") from exc
        except ChainError:
            raise
        except Exception as exc:
            raise ChainError(f"{name}.{function}: {exc}", retryable=_retryable(exc)) from exc

    # --- sending -------------------------------------------------------------------

    def _tx(self, *, sender: str, contract: str, function: str, args: list, to: str, value: int) -> dict:
        if contract:
            return getattr(self.contract(contract).functions, function)(*args).build_transaction(
                {"from": sender, "value": 0, "gas": 0, "maxFeePerGas": 0, "maxPriorityFeePerGas": 0, "nonce": 0}
            )
        return {"to": to, "value": value, "data": b""}

    def sign(self, *, sender_index: int, contract: str, function: str, args: list, to: str, value: int, nonce: int):
        """Estimate gas and sign; ``Reverted`` if the call would revert now."""
        key = custody_key(sender_index)
        sender = _address(key)
        try:
            tx = self._tx(sender=sender, contract=contract, function=function, args=args, to=to, value=value)
            tx = {k: v for k, v in tx.items() if k in ("to", "data", "value")}
            estimate = self._estimate(tx, sender)
            base_fee = self.w3.eth.get_block("latest").get("baseFeePerGas", 10**9)
        except ContractLogicError as exc:
            raise Reverted(f"{contract}.{function} would revert: {exc}") from exc
        except ChainError:
            raise
        except Exception as exc:
            if _retryable(exc):
                raise ChainError(f"RPC: {exc}", retryable=True) from exc
            raise Reverted(f"{contract or 'transfer'}.{function}: {exc}") from exc
        tip = 10**9
        tx |= {
            "from": sender,
            "nonce": nonce,
            "gas": estimate * 12 // 10 + 10_000,
            "maxFeePerGas": base_fee * 2 + tip,
            "maxPriorityFeePerGas": tip,
            "chainId": self.chain_id,
            "type": 2,
        }
        tx.pop("from")
        return _signed(tx, key)

    def resign(self, *, raw: str, sender_index: int, max_fee: int, tip: int) -> Signed:
        """The transaction in ``raw`` again, same nonce, gas and call, with other fees
        (a replacement: nodes take it only if both fees are at least 10 % higher)."""
        tx = TypedTransaction.from_bytes(HexBytes(raw)).as_dict()
        tx = {k: v for k, v in tx.items() if k not in ("v", "r", "s")}
        tx |= {"maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip}
        return _signed(tx, custody_key(sender_index))

    def head(self) -> int:
        """The latest block's number."""
        try:
            return self.w3.eth.block_number
        except Exception as exc:
            raise ChainError(f"RPC: {exc}", retryable=True) from exc

    def block_hash(self, number: int) -> str:
        """The hash of block ``number`` ("" when the chain has no such block)."""
        try:
            block = self.w3.eth.get_block(number)
        except BlockNotFound:
            return ""
        except Exception as exc:
            raise ChainError(f"RPC: {exc}", retryable=True) from exc
        return _hex(block["hash"])

    def base_fee(self) -> int:
        try:
            return self.w3.eth.get_block("latest").get("baseFeePerGas", 10**9)
        except Exception as exc:
            raise ChainError(f"RPC: {exc}", retryable=True) from exc

    def _estimate(self, tx: dict, sender: str) -> int:
        """Gas for ``tx``; raises as the node does when it would revert."""
        return self.w3.eth.estimate_gas({**tx, "from": sender})

    def chain_nonce(self, index: int) -> int:
        try:
            return self.w3.eth.get_transaction_count(address_for(index), "pending")
        except Exception as exc:
            raise ChainError(f"RPC: {exc}", retryable=True) from exc

    def broadcast(self, raw: str) -> None:
        """Send a signed transaction; sending the same bytes again is harmless."""
        try:
            self._before_send()
            self.w3.eth.send_raw_transaction(raw)
        except Exception as exc:
            text = str(exc).lower()
            if any(w in text for w in ("already known", "nonce too low", "already imported", "known transaction")):
                return
            if _nonce_used(text):  # py-evm's "nonce too low": the bytes were mined before
                return
            raise ChainError(f"broadcast: {exc}", retryable=_retryable(exc)) from exc

    def _before_send(self) -> None:
        pass

    def receipt(self, tx_hash: str, *, timeout: float) -> Receipt | None:
        """The receipt, waiting up to ``timeout`` seconds; None if not mined by then."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                raw = self.w3.eth.get_transaction_receipt(tx_hash)
                break
            except TransactionNotFound:
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.2)
            except Exception as exc:
                raise ChainError(f"receipt: {exc}", retryable=True) from exc
        try:
            block = self.w3.eth.get_block(raw["blockNumber"])
        except BlockNotFound:
            return None  # reorganised away between the two reads
        except Exception as exc:
            raise ChainError(f"receipt: {exc}", retryable=True) from exc
        if raw.get("blockHash") is not None and _hex(raw["blockHash"]) != _hex(block["hash"]):
            return None  # block N changed between the two reads (a reorganisation)
        return Receipt(
            tx_hash=tx_hash,
            block_number=raw["blockNumber"],
            block_timestamp=block["timestamp"],
            gas_used=raw["gasUsed"],
            ok=raw["status"] == 1,
            events=self._events(raw),
            block_hash=_hex(block["hash"]),
        )

    def _events(self, raw) -> list[dict]:
        by_address = {address.lower(): name for name, address in self.addresses.items()}
        out = []
        for log in raw["logs"]:
            name = by_address.get(log["address"].lower())
            if name is None:
                continue
            contract = self.contract(name)
            for event in contract.events:
                try:
                    decoded = event().process_log(log)
                except Exception:  # noqa: S112 - not this event
                    continue
                out.append(
                    {
                        "contract": name,
                        "event": decoded["event"],
                        "log_index": log["logIndex"],
                        "args": {k: _jsonable(v) for k, v in decoded["args"].items()},
                    }
                )
                break
        return out

    def block_timestamp(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def genesis_hash(self) -> str:
        """The hash of block 0 ("0x…"): a chain reset (same chain id) gives a new one."""
        try:
            return "0x" + bytes(self.w3.eth.get_block(0)["hash"]).hex().removeprefix("0x")
        except Exception as exc:
            raise ChainError(f"RPC: {exc}", retryable=True) from exc

    def has_code(self, name: str) -> bool:
        """Whether contract ``name``'s recorded address holds code on this chain."""
        if name not in self.addresses:
            return False
        try:
            return len(self.w3.eth.get_code(self.addresses[name])) > 0
        except Exception as exc:
            raise ChainError(f"RPC: {exc}", retryable=True) from exc


class EmbeddedChain(Chain):
    """The in-process EVM. Block times follow the wall clock (each transaction
    is mined in its own block at the time it is sent) or, when replaying, the
    time the transaction was first mined."""

    embedded = True

    def __init__(self, *, genesis_timestamp: int):
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider

        params = PyEVMBackend._generate_genesis_params(
            overrides={"timestamp": genesis_timestamp, "gas_limit": 30_000_000}
        )
        self.backend = PyEVMBackend(genesis_parameters=params)
        self.tester = EthereumTester(self.backend)
        super().__init__(Web3(EthereumTesterProvider(self.tester)))
        self.genesis_timestamp = genesis_timestamp
        self.applied_upto = 0  # the last outbox row this chain has executed
        self.lock = threading.RLock()
        self._at: int | None = None

    # py-evm estimates gas by a binary search (a dozen executions of the call); in-process, one
    # execution (``eth_call``: it raises like the estimate when the call would revert) and a
    # fixed limit well above any of our calls do the same job. Unused gas is never charged.
    GAS_LIMIT = 6_000_000

    def _estimate(self, tx: dict, sender: str) -> int:
        self.w3.eth.call({**tx, "from": sender})
        return self.GAS_LIMIT

    def at(self, timestamp: int | None) -> None:
        """Mine the next transaction at ``timestamp`` (None: the wall clock)."""
        self._at = timestamp

    def _before_send(self) -> None:
        parent = self.w3.eth.get_block("latest")["timestamp"]
        ts = max(self._at if self._at is not None else int(time.time()), parent + 1)
        self.backend.chain.header = self.backend.chain.header.copy(timestamp=ts)

    def fund(self, address: str, wei: int) -> None:
        """Genesis funding from eth-tester's first unlocked account."""
        self._before_send()
        tx = self.w3.eth.send_transaction({"from": self.w3.eth.accounts[0], "to": address, "value": wei})
        self.w3.eth.wait_for_transaction_receipt(tx)

    def advance_to(self, timestamp: int) -> None:
        """Mine an empty block at ``timestamp`` (tests and replays of time-dependent reads)."""
        self.at(timestamp)
        self._before_send()
        self.at(None)
        self.backend.mine_blocks()

    def snapshot(self) -> int:
        return self.tester.take_snapshot()

    def revert(self, snapshot: int) -> None:
        self.tester.revert_to_snapshot(snapshot)
        self.applied_upto = 0


def rpc_chain(url: str) -> Chain:
    return Chain(Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": settings.CHAIN_RPC_TIMEOUT_SECONDS})))


def checksum(value: str) -> str:
    return to_checksum_address(value)
