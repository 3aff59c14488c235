"""EIP-55 wallet addresses: checksummed accepted, anything else refused with a reason."""

import pytest
from django.core.exceptions import ValidationError
from eth_utils import to_checksum_address
from hypothesis import given
from hypothesis import strategies as st

from accounts.validators import validate_eip55_address

# The test vectors of EIP-55 itself.
EIP55_VECTORS = [
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
]


@pytest.mark.parametrize("address", EIP55_VECTORS)
def test_eip55_vectors_are_accepted(address):
    validate_eip55_address(address)


def test_lowercase_address_is_refused_with_the_checksummed_form():
    with pytest.raises(ValidationError) as exc:
        validate_eip55_address(EIP55_VECTORS[0].lower())
    assert exc.value.code == "not_checksummed"
    assert EIP55_VECTORS[0] in exc.value.messages[0]


@pytest.mark.parametrize("value", ["", "0x123", "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0x" + "g" * 40])
def test_malformed_addresses_are_refused(value):
    with pytest.raises(ValidationError) as exc:
        validate_eip55_address(value)
    assert exc.value.code == "invalid"


@given(st.binary(min_size=20, max_size=20), st.integers(min_value=2, max_value=41))
def test_flipping_the_case_of_one_letter_breaks_the_checksum(raw, position):
    address = to_checksum_address(raw)
    validate_eip55_address(address)
    char = address[position]
    if not char.isalpha():
        return
    flipped = address[:position] + char.swapcase() + address[position + 1 :]
    with pytest.raises(ValidationError):
        validate_eip55_address(flipped)
