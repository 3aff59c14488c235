"""CALIBER titles on chain: one NFT per approved collateral record.

The token id is the collateral's id; the token carries the keccak-256 hash of
the record as approved (identity, custody, insurance, appraisal: see
``collateral_record``), so a holder of the record can prove it is the one
the title binds. The NFT is minted to the owner's custodial wallet, pledged
(lien set) while its loan is live, released on repayment, and transferred
to the protocol on foreclosure. Each call is queued in the transaction of
the change it mirrors.
"""

import json

from eth_utils import keccak

from financing.models import Collateral, Loan
from financing.services.outbox import chainop_enqueue
from financing.services.wallets import wallet_for_company


def collateral_record(collateral: Collateral) -> dict:
    """The record a title binds, as published at ``/caliber/<id>.json``."""
    server = collateral.server
    latest = collateral.appraisals.order_by("-as_of", "-id").first()
    return {
        "token_id": collateral.pk,
        "identity": {
            "hostname": server.hostname,
            "gpus": sorted((g.model.name, g.serial) for g in server.gpus.select_related("model")),
        },
        "purchase": {"price": f"{collateral.purchase_price:.2f}", "date": collateral.purchase_date.isoformat()},
        "custody": {"custodian": collateral.custodian, "receipt": collateral.custody_receipt},
        "insurance": {
            "insurer": collateral.insurer,
            "policy": collateral.policy_number,
            "coverage": f"{collateral.coverage:.2f}",
            "expires": collateral.insurance_expires.isoformat(),
        },
        "appraisal": {"value": f"{latest.value:.2f}", "as_of": latest.as_of.isoformat()} if latest else None,
    }


def record_hash(record: dict) -> str:
    return "0x" + keccak(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hex()


def title_mint(*, collateral: Collateral) -> None:
    wallet = wallet_for_company(company=collateral.server.owner)
    chainop_enqueue(
        key=f"title:{collateral.pk}:mint",
        contract="CaliberNFT",
        function="mint",
        args=[wallet.address, collateral.pk, record_hash(collateral_record(collateral))],
    )


def title_lien(*, loan: Loan, active: bool) -> None:
    chainop_enqueue(
        key=f"title:{loan.collateral_id}:lien:{loan.pk}:{'set' if active else 'clear'}",
        contract="CaliberNFT",
        function="set_lien",
        args=[loan.collateral_id, active],
    )


def title_foreclose(*, loan: Loan) -> None:
    chainop_enqueue(
        key=f"title:{loan.collateral_id}:foreclose:{loan.pk}",
        contract="CaliberNFT",
        function="foreclose",
        args=[loan.collateral_id],
    )
