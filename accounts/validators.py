"""Validators for account fields."""

import re

from django.core.exceptions import ValidationError
from eth_utils import is_checksum_address, to_checksum_address

_HEX_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


def validate_eip55_address(value: str) -> None:
    """Accept only an EIP-55 checksummed Ethereum address.

    A lower- or upper-case address is a valid hex address without a checksum,
    so a typo cannot be caught; we refuse it and show the checksummed form.
    """
    if not _HEX_ADDRESS.match(value or ""):
        raise ValidationError("Enter an Ethereum address: 0x followed by 40 hexadecimal characters.", code="invalid")
    if not is_checksum_address(value):
        body = value[2:]
        if body == body.lower() or body == body.upper():
            raise ValidationError(
                "This address has no EIP-55 checksum. Did you mean %(suggestion)s?",
                code="not_checksummed",
                params={"suggestion": to_checksum_address(value)},
            )
        raise ValidationError("The EIP-55 checksum of this address is wrong: check it for a typo.", code="bad_checksum")
