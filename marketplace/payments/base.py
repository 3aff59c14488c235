"""The payment gateway interface: frozen dataclasses out, typed errors.

Amounts cross this interface as ``Decimal`` USD in whole cents; each
implementation converts to its own units (Stripe: integer cents) inside.
"""

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol


class GatewayError(Exception):
    """The gateway could not be reached or answered an error.

    ``retryable`` says whether trying again later can help (timeouts, 5xx,
    rate limits) or not (bad request, authentication).
    """

    def __init__(self, message: str, *, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


class PaymentDeclined(Exception):
    """The payment method was declined; the renter should use another one."""

    def __init__(self, message: str, *, reference: str = "", code: str = ""):
        super().__init__(message)
        self.reference = reference
        self.code = code


class SignatureError(Exception):
    """A webhook payload whose signature does not verify."""


@dataclass(frozen=True)
class PaymentResult:
    reference: str  # e.g. the PaymentIntent id
    status: str  # "succeeded", "processing", "requires_action", "requires_payment_method"
    amount: Decimal
    client_secret: str = ""


@dataclass(frozen=True)
class RefundResult:
    reference: str  # e.g. the Refund id
    status: str  # "succeeded", "pending", "failed"
    amount: Decimal


@dataclass(frozen=True)
class GatewayEvent:
    """A verified webhook event, reduced to what we act on."""

    id: str
    type: str  # e.g. "payment_intent.succeeded", "payment_intent.payment_failed", "charge.refunded"
    payment_reference: str  # the PaymentIntent id the event is about ("" if none)
    booking_id: str  # metadata["booking_id"] of the PaymentIntent ("" if none)
    amount: Decimal  # amount received / refunded, USD
    created: int  # the event's creation time, Unix seconds
    payload: dict = field(default_factory=dict, compare=False)


class PaymentGateway(Protocol):
    name: str
    is_test: bool  # true for the offline gateway: the UI labels its payments as test payments

    def charge(
        self, *, booking_id: str, amount: Decimal, idempotency_key: str, payment_method: str = "", description: str = ""
    ) -> PaymentResult:
        """Create and confirm a payment for ``amount`` USD (whole cents).

        Raises ``PaymentDeclined`` when the card is refused, ``GatewayError``
        otherwise. The same ``idempotency_key`` never charges twice.
        """

    def refund(self, *, payment_reference: str, amount: Decimal, idempotency_key: str) -> RefundResult:
        """Refund ``amount`` USD (whole cents) of a payment; idempotent by key."""

    def parse_event(self, *, payload: bytes, signature_header: str) -> GatewayEvent:
        """Verify a webhook's signature and parse it; ``SignatureError`` if it fails."""
