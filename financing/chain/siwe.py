"""Sign-In with Ethereum (EIP-4361): the message, built and parsed strictly, and its signer.

The ``siwe`` package would downgrade web3, so the format is implemented here,
in the adapter (the only place ``eth_account`` is imported). Only the fields
we issue are accepted, in the order EIP-4361 gives them::

    {domain} wants you to sign in with your Ethereum account:
    {address}

    {statement}

    URI: {uri}
    Version: 1
    Chain ID: {chain_id}
    Nonce: {nonce}
    Issued At: {issued_at}
    Expiration Time: {expiration_time}

``siwe_parse`` raises ``SiweError`` for anything else (a missing or extra
line, a field out of order, an address that is not EIP-55); the caller then
compares every field with what it issued. ``siwe_signer`` recovers the
address that signed the message with ``personal_sign`` (EIP-191).
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import is_checksum_address

from core.api import digits

_HEADER = " wants you to sign in with your Ethereum account:"
_FIELDS = ("URI", "Version", "Chain ID", "Nonce", "Issued At", "Expiration Time")
_NONCE = re.compile(r"[A-Za-z0-9]{8,32}")
_SIGNATURE = re.compile(r"0x[0-9a-fA-F]{130}")


class SiweError(ValueError):
    """The message or the signature is not one we could have issued or accepted (no retry helps)."""


@dataclass(frozen=True)
class SiweMessage:
    domain: str
    address: str
    statement: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: datetime
    expiration_time: datetime
    version: str = "1"


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_timestamp(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise SiweError(f"{text!r} is not an RFC 3339 UTC time") from exc


def siwe_message(message: SiweMessage) -> str:
    """The EIP-4361 text of ``message`` (what the wallet shows and signs)."""
    return "\n".join(
        [
            f"{message.domain}{_HEADER}",
            message.address,
            "",
            message.statement,
            "",
            f"URI: {message.uri}",
            f"Version: {message.version}",
            f"Chain ID: {message.chain_id}",
            f"Nonce: {message.nonce}",
            f"Issued At: {_timestamp(message.issued_at)}",
            f"Expiration Time: {_timestamp(message.expiration_time)}",
        ]
    )


def siwe_parse(text: str) -> SiweMessage:
    """The fields of an EIP-4361 message in exactly our layout; ``SiweError`` otherwise."""
    lines = (text or "").replace("\r\n", "\n").split("\n")
    if len(lines) != 5 + len(_FIELDS) or not lines[0].endswith(_HEADER) or lines[2] != "" or lines[4] != "":
        raise SiweError("not a Sign-In with Ethereum message")
    domain = lines[0].removesuffix(_HEADER)
    address = lines[1]
    if not domain or " " in domain:
        raise SiweError("no domain")
    if not is_checksum_address(address):
        raise SiweError("the address is not EIP-55 checksummed")
    values = {}
    for line, name in zip(lines[5:], _FIELDS, strict=True):
        prefix = f"{name}: "
        if not line.startswith(prefix):
            raise SiweError(f"expected the {name} field")
        values[name] = line.removeprefix(prefix)
    if values["Version"] != "1":
        raise SiweError("only version 1 is supported")
    if digits(values["Chain ID"]) is None:
        raise SiweError("the chain id is not a number")
    if not _NONCE.fullmatch(values["Nonce"]):
        raise SiweError("the nonce is not 8 to 32 letters and digits")
    return SiweMessage(
        domain=domain,
        address=address,
        statement=lines[3],
        uri=values["URI"],
        chain_id=int(values["Chain ID"]),
        nonce=values["Nonce"],
        issued_at=_parse_timestamp(values["Issued At"]),
        expiration_time=_parse_timestamp(values["Expiration Time"]),
    )


def siwe_signer(text: str, signature: str) -> str:
    """The EIP-55 address whose key made ``signature`` (65 bytes, hex) over ``text`` (EIP-191)."""
    signature = (signature or "").strip()
    if not _SIGNATURE.fullmatch(signature):
        raise SiweError("the signature is not 65 bytes of hex")
    try:
        return Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception as exc:  # eth_keys refuses a malformed v, r or s
        raise SiweError(f"the signature cannot be recovered: {exc}") from exc


def siwe_sign(text: str, key: str) -> str:
    """``personal_sign`` of ``text`` with ``key`` (tests and tools: the user's wallet signs in the browser)."""
    return "0x" + Account.sign_message(encode_defunct(text=text), key).signature.hex().removeprefix("0x")
