"""ISO 20022 SEPA credit transfers (pain.001.001.03) for owner payouts: the one module
that knows ``sepaxml``.

``pain001_build`` turns plain lines into the XML document the operator uploads to the
bank, validated against the pain.001.001.03 schema that ships with sepaxml (an invalid
document raises ``SepaError`` and nothing is stored). Amounts are EUR: SEPA is a euro
scheme, the books are USD, and the caller converts (``PAYOUT_USD_EUR_RATE``) before it
calls here; the conversion to integer cents happens only here.
"""

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from sepaxml import SepaTransfer
from text_unidecode import unidecode

from core import money

SCHEMA = "pain.001.001.03"
# The SEPA character set (EPC guidance: what every bank in the scheme must accept).
_SEPA_CHARACTERS = re.compile(r"[^A-Za-z0-9/?:().,'+ -]")


class SepaError(Exception):
    """The document could not be built or does not validate (a retry will not help)."""


@dataclass(frozen=True)
class Party:
    name: str
    iban: str
    bic: str = ""
    country: str = ""
    address_lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class CreditTransfer:
    creditor: Party
    amount_eur: Decimal
    end_to_end_id: str
    description: str


@dataclass(frozen=True)
class SepaDocument:
    message_id: str
    xml: str
    total_eur: Decimal


def sepa_text(value: str, limit: int) -> str:
    """``value`` in the SEPA character set, at most ``limit`` characters: transliterated
    ("Müller" → "Muller"), anything else (control characters, emoji, "&") a space, spaces
    collapsed. Whatever a company stored, its line makes a document that validates."""
    return " ".join(_SEPA_CHARACTERS.sub(" ", unidecode(value or "")).split())[:limit].strip()


def account_id(value: str) -> str:
    """An IBAN or BIC as the file carries it: no spaces, upper case ("de89 3704…" → "DE893704…")."""
    return "".join((value or "").split()).upper()


def _address(party: Party) -> dict:
    address: dict = {}
    if party.country:
        address["country"] = party.country
    lines = [sepa_text(line, 70) for line in party.address_lines]
    lines = [line for line in lines if line][:2]  # PostalAddress6: at most two lines of Max70Text
    if lines:
        address["lines"] = lines
    return address


def pain001_build(*, debtor: Party, transfers: list[CreditTransfer], execution_date: date) -> SepaDocument:
    """One pain.001.001.03 document paying ``transfers`` from ``debtor``'s account, schema-checked."""
    if not transfers:
        raise SepaError("A SEPA file needs at least one transfer.")
    config = {
        "name": sepa_text(debtor.name, 70),
        "IBAN": account_id(debtor.iban),
        "batch": True,
        "currency": "EUR",
        # sepaxml writes the debtor's address from here whenever a creditor has one.
        "address": _address(debtor),
    }
    if debtor.bic:
        config["BIC"] = account_id(debtor.bic)
    try:
        document = SepaTransfer(config, schema=SCHEMA, clean=True)
        for transfer in transfers:
            payment = {
                "name": sepa_text(transfer.creditor.name, 70) or "Unnamed creditor",
                "IBAN": account_id(transfer.creditor.iban),
                "amount": money.to_cents(transfer.amount_eur),
                "execution_date": execution_date,
                "description": sepa_text(transfer.description, 140),
                "endtoend_id": transfer.end_to_end_id,
            }
            if transfer.creditor.bic:
                payment["BIC"] = account_id(transfer.creditor.bic)
            if address := _address(transfer.creditor):
                payment["address"] = address
            document.add_payment(payment)
        xml = document.export(validate=True)
    except Exception as exc:  # sepaxml raises bare Exception for invalid input and for schema failures
        raise SepaError(f"The SEPA file does not validate: {exc}") from exc
    total = sum((transfer.amount_eur for transfer in transfers), Decimal(0))
    return SepaDocument(message_id=document.msg_id, xml=xml.decode(), total_eur=money.cents(total))
