"""The embedded demo's gateway: every payment settles at once.

Payments made through it are test payments and the UI says so. It keeps no
state of its own: references derive from the idempotency key, so a retried
call returns the same reference. Its record of what it captured is therefore
the marketplace's own: ``captured_charges`` lists the booking payments it
confirmed (``Payment`` rows; USDai bought through it are financing's rows,
which this app does not read). Checked against themselves they always match,
so the money reconciler's charge check means something only for a gateway
with its own state (Stripe).
"""

import hashlib
from datetime import datetime
from decimal import Decimal

from marketplace.payments.base import (
    CapturedCharge,
    GatewayError,
    GatewayEvent,
    NoSavedCards,
    PaymentEvent,
    PaymentResult,
    RefundResult,
    SignatureError,
    ignored_event,
)


def _ref(prefix: str, key: str) -> str:
    return f"{prefix}_{hashlib.sha256(key.encode()).hexdigest()[:24]}"


class OfflineGateway(NoSavedCards):
    name = "offline"
    is_test = True
    browser_cards = False  # no card is entered: nothing to save

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
        return PaymentResult(reference=_ref("offpi", idempotency_key), status="succeeded", amount=amount)

    def retrieve(self, *, reference: str) -> PaymentResult:
        # No state is kept, so the amount is not known (0); every payment made here succeeded.
        if not reference.startswith("offpi_"):
            raise GatewayError(f"No payment {reference} here.", retryable=False)
        return PaymentResult(reference=reference, status="succeeded", amount=Decimal(0))

    def refund(self, *, payment_reference: str, amount: Decimal, idempotency_key: str) -> RefundResult:
        return RefundResult(reference=_ref("offre", idempotency_key), status="succeeded", amount=amount)

    def captured_charges(self, *, since: datetime) -> list[CapturedCharge]:
        from marketplace.models import Payment  # the only record of what this gateway captured

        rows = Payment.objects.filter(gateway=self.name, status=Payment.Status.SUCCEEDED, created_at__gte=since)
        return [
            CapturedCharge(
                reference=reference, amount=amount, created=int(created.timestamp()), booking_id=str(booking)
            )
            for reference, amount, created, booking in rows.values_list(
                "reference", "amount", "created_at", "booking__public_id"
            )
        ]

    def parse_event(self, *, payload: bytes, signature_header: str) -> GatewayEvent:
        raise SignatureError("The offline gateway sends no webhooks.")

    def translate_event(self, event: GatewayEvent) -> PaymentEvent:
        return ignored_event(event)
