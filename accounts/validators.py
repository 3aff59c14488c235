"""Validators for account fields."""

import re
import unicodedata

from django.core.exceptions import ValidationError
from eth_utils import is_checksum_address, to_checksum_address
from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException
from stdnum.eu import vat

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


# --- Payout details (issue 14): schwifty for IBAN/BIC, python-stdnum for VAT ids ------------


def iban_problem(value: str) -> str:
    """Why ``value`` is not a valid IBAN (checksum, length, country format), or "" if it is one."""
    try:
        IBAN(value)
    except SchwiftyException as exc:
        return f"This is not a valid IBAN ({exc})."
    return ""


def validate_iban(value: str) -> None:
    if problem := iban_problem(value):
        raise ValidationError(problem, code="invalid_iban")


def validate_bic(value: str) -> None:
    try:
        BIC(value)
    except SchwiftyException as exc:
        raise ValidationError(f"This is not a valid BIC ({exc}).", code="invalid_bic") from exc


def bic_iban_mismatch(bic: str, iban: str) -> str:
    """A message if the BIC's country is not the IBAN's (both already valid), else ""."""
    bic_country, iban_country = BIC(bic).country_code, IBAN(iban).country_code
    if bic_country != iban_country:
        return f"This BIC is of a bank in {bic_country}; the IBAN is of an account in {iban_country}."
    return ""


def validate_vat_id(value: str) -> None:
    """An EU VAT id: country prefix, format and check digits (``stdnum.eu.vat``)."""
    if not vat.is_valid(value):
        raise ValidationError(
            "This is not a valid EU VAT id (country prefix, then the national number).", code="invalid_vat"
        )


def control_character_problem(value: str) -> str:
    """Why ``value`` cannot be a line of a name or an address ("" if it can): it holds a control
    or format character (newlines, tabs, U+0001, zero-width...), which no bank file (XML 1.0,
    pain.001) or invoice line may carry."""
    bad = next((c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")), None)
    return f"Remove the control character U+{ord(bad):04X}." if bad is not None else ""


def validate_printable(value: str) -> None:
    if problem := control_character_problem(value):
        raise ValidationError(problem, code="control_character")
