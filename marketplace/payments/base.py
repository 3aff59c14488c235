"""The payment gateway interface: frozen dataclasses out, typed errors.

Amounts cross this interface as ``Decimal`` USD in whole cents; each
implementation converts to its own units (Stripe: integer cents) inside.

A webhook crosses it in two steps: ``parse_event`` verifies the signature and
returns the ``GatewayEvent`` that is stored as it came; ``translate_event``
says what a stored event means in the marketplace's own words, a
``PaymentEvent``. The provider's event types and payload fields stay inside
its adapter: services act on ``PaymentEvent`` only. Both carry the payment's
metadata, which names what a payment that is not a booking's is for
(``purposes``).

Cards in the browser: a gateway with ``browser_cards`` (Stripe) creates a
payment without a payment method and returns its ``client_secret`` for
Stripe.js, keeps a Customer per renter (``customer_create``) and the cards
saved for it (``card_setup``, ``cards``, ``card_detach``: ``SavedCard`` out).
The offline and USDai gateways take no card in the browser and save none.
"""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
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
class SavedCard:
    """A card the gateway keeps for a customer (or the card a payment was made with)."""

    reference: str  # e.g. the PaymentMethod id
    brand: str  # "visa", "mastercard", ...
    last4: str
    exp_month: int = 0
    exp_year: int = 0

    @property
    def label(self) -> str:
        return f"{self.brand.title()} •••• {self.last4}"


@dataclass(frozen=True)
class CardSetup:
    """A card being saved in the browser (a SetupIntent): Stripe.js confirms it with the secret."""

    reference: str  # e.g. the SetupIntent id
    client_secret: str


@dataclass(frozen=True)
class PaymentResult:
    reference: str  # e.g. the PaymentIntent id
    status: str  # "succeeded", "processing", "requires_action", "requires_payment_method", "canceled"
    amount: Decimal
    client_secret: str = ""
    # The card it was paid with, when the gateway says (``retrieve``); not part of the payment's identity.
    card: SavedCard | None = field(default=None, compare=False)
    metadata: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class RefundResult:
    reference: str  # e.g. the Refund id
    status: str  # "succeeded", "pending", "failed"
    amount: Decimal


@dataclass(frozen=True)
class CapturedCharge:
    """A payment the gateway captured (money taken), as it lists them for reconciliation."""

    reference: str  # e.g. the PaymentIntent id
    amount: Decimal  # USD captured (before any refund)
    created: int  # the gateway's creation time, Unix seconds
    booking_id: str = ""  # metadata["booking_id"] ("" if none)
    purchase_id: str = ""  # metadata["usdai_purchase"] ("" if none)


@dataclass(frozen=True)
class GatewayEvent:
    """A verified webhook event as the gateway sent it, with the payment, booking and
    amount it is about; stored on a ``WebhookEvent`` row before it is handled."""

    id: str
    type: str  # the gateway's own name of the event (Stripe: "payment_intent.succeeded", ...), kept for operators
    payment_reference: str  # the PaymentIntent id the event is about ("" if none)
    booking_id: str  # metadata["booking_id"] of the PaymentIntent ("" if none)
    amount: Decimal  # amount received / refunded, USD
    created: int  # the event's creation time, Unix seconds
    payload: dict = field(default_factory=dict, compare=False)
    # The payment's metadata, e.g. {"usdai_purchase": "42"}: which purpose (``purposes``) it serves.
    metadata: dict[str, str] = field(default_factory=dict, compare=False)


class EventKind(StrEnum):
    """What a gateway event means to the marketplace."""

    PAID = "paid"  # a payment succeeded
    PAYMENT_FAILED = "payment_failed"  # a payment attempt failed
    REFUNDED = "refunded"  # a refund of a payment was made or changed
    IGNORED = "ignored"  # nothing the marketplace acts on


@dataclass(frozen=True)
class PaymentEvent:
    """A verified gateway event in the marketplace's words: what services act on."""

    kind: EventKind
    payment_reference: str  # the payment's reference at the gateway ("" if none)
    booking_id: str  # the public id of the booking the payment is for ("" if the event does not say)
    amount: Decimal  # USD received (PAID) or refunded (REFUNDED)
    failure_message: str = ""  # PAYMENT_FAILED: why, as the gateway puts it
    refund_reference: str = ""  # REFUNDED: the refund's id at the gateway ("" if the event names none)
    refund_status: str = ""  # REFUNDED: the refund's status, as in ``RefundResult.status`` ("" if unknown)
    metadata: dict[str, str] = field(default_factory=dict, compare=False)  # as on ``GatewayEvent``


def ignored_event(event: GatewayEvent) -> PaymentEvent:
    """The meaning of an event the marketplace does not act on."""
    return PaymentEvent(
        kind=EventKind.IGNORED,
        payment_reference=event.payment_reference,
        booking_id=event.booking_id,
        amount=event.amount,
        metadata=event.metadata,
    )


class PaymentGateway(Protocol):
    name: str
    is_test: bool  # true for the offline gateway: the UI labels its payments as test payments
    # True when cards are entered in the browser (Stripe.js) and can be saved for a customer.
    browser_cards: bool

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
        """Create and confirm a payment for ``amount`` USD (whole cents).

        Raises ``PaymentDeclined`` when the card is refused, ``GatewayError``
        otherwise. The same ``idempotency_key`` never charges twice: the same
        call again answers the first call's payment. ``metadata`` is stored
        with the payment (beside ``booking_id``) for whoever reads it back.
        Without ``payment_method`` a gateway with ``browser_cards`` creates
        the payment unconfirmed and returns its ``client_secret`` (status
        ``requires_payment_method``) for the browser to confirm. ``customer``
        ties it to the renter's customer (so the card can be saved);
        ``receipt_email`` is where the gateway sends its receipt.
        """

    def customer_create(self, *, email: str, name: str, idempotency_key: str) -> str:
        """A new customer at the gateway (its id); the same key answers the same customer."""

    def card_setup(self, *, customer: str, idempotency_key: str) -> CardSetup:
        """Start saving a card for ``customer``: the browser confirms the returned secret."""

    def cards(self, *, customer: str) -> list[SavedCard]:
        """The cards saved for ``customer``, newest first. Raises ``GatewayError``."""

    def card_detach(self, *, customer: str, reference: str) -> None:
        """Forget a saved card. ``GatewayError(retryable=False)`` if it is not ``customer``'s."""

    def retrieve(self, *, reference: str) -> PaymentResult:
        """The payment ``reference`` as the gateway holds it now (its status may have moved on).

        Raises ``GatewayError`` (not retryable when there is no such payment).
        """

    def refund(self, *, payment_reference: str, amount: Decimal, idempotency_key: str) -> RefundResult:
        """Refund ``amount`` USD (whole cents) of a payment; idempotent by key."""

    def captured_charges(self, *, since: datetime) -> list[CapturedCharge]:
        """Every payment captured (succeeded) at the gateway created at or after ``since``.

        For the money reconciler. Raises ``GatewayError``.
        """

    def parse_event(self, *, payload: bytes, signature_header: str) -> GatewayEvent:
        """Verify a webhook's signature and parse it; ``SignatureError`` if it fails."""

    def translate_event(self, event: GatewayEvent) -> PaymentEvent:
        """What a verified event (as parsed, or as stored) means to the marketplace."""


class NoSavedCards:
    """The card methods of a gateway that takes no card in the browser (offline, USDai)."""

    browser_cards = False

    def customer_create(self, *, email: str, name: str, idempotency_key: str) -> str:
        return ""  # no customers here

    def card_setup(self, *, customer: str, idempotency_key: str) -> "CardSetup":
        raise GatewayError("Cards cannot be saved with this gateway.", retryable=False)

    def cards(self, *, customer: str) -> "list[SavedCard]":
        return []

    def card_detach(self, *, customer: str, reference: str) -> None:
        raise GatewayError("No card is saved with this gateway.", retryable=False)
