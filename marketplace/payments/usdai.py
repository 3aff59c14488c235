"""Paying with a USDai balance.

The balance lives in financing's ledger, which this app does not import: a
USDai payment is made by ``financing.services.wallets.booking_pay_usdai``,
which debits the balance and then confirms the booking through this gateway
in the same database transaction (it passes ``USDAI_LEDGER_DEBITED`` as the
payment method). A refund succeeds at once; financing credits it back to the
renter's USDai when it journals the refund.
"""

import hashlib
from decimal import Decimal

from marketplace.payments.base import (
    GatewayError,
    GatewayEvent,
    NoSavedCards,
    PaymentDeclined,
    PaymentEvent,
    PaymentResult,
    RefundResult,
    SignatureError,
    ignored_event,
)

USDAI_LEDGER_DEBITED = "usdai-ledger-debited"


def _ref(prefix: str, key: str) -> str:
    return f"{prefix}_{hashlib.sha256(key.encode()).hexdigest()[:24]}"


class UsdaiGateway(NoSavedCards):
    name = "usdai"
    is_test = False
    browser_cards = False  # paid from a balance, not a card

    def charge(
        self,
        *,
        booking_id: str,
        amount: Decimal,
        idempotency_key: str,
        payment_method: str = "",
        description: str = "",
        metadata: dict[str, str] | None = None,
        customer: str = "",
        receipt_email: str = "",
    ) -> PaymentResult:
        if payment_method != USDAI_LEDGER_DEBITED:
            raise PaymentDeclined("Pay with USDai from the booking's checkout page.")
        return PaymentResult(reference=_ref("usdai", idempotency_key), status="succeeded", amount=amount)

    def retrieve(self, *, reference: str) -> PaymentResult:
        # No state is kept, so the amount is not known (0); every payment made here succeeded.
        if not reference.startswith("usdai_"):
            raise GatewayError(f"No payment {reference} here.", retryable=False)
        return PaymentResult(reference=reference, status="succeeded", amount=Decimal(0))

    def refund(self, *, payment_reference: str, amount: Decimal, idempotency_key: str) -> RefundResult:
        return RefundResult(reference=_ref("usdaire", idempotency_key), status="succeeded", amount=amount)

    def parse_event(self, *, payload: bytes, signature_header: str) -> GatewayEvent:
        raise SignatureError("USDai payments send no webhooks.")

    def translate_event(self, event: GatewayEvent) -> PaymentEvent:
        return ignored_event(event)
