"""The Stripe gateway: PaymentIntents, Refunds and signed webhooks.

``StripeGateway`` implements ``base.PaymentGateway`` with the official
``stripe`` SDK. It is the only module of the project that imports ``stripe``:
everything else sees the frozen dataclasses and typed errors of ``base``.
Amounts cross the interface as ``Decimal`` USD in whole cents and become
Stripe's integer cents here, through ``core.money.to_cents`` / ``from_cents``.

Each instance owns its ``stripe.StripeClient`` (API key, API base, timeout,
network retries), so nothing is set on the ``stripe`` module and two gateways
never share configuration. ``STRIPE_API_BASE`` points the client at a
Stripe-compatible server (localstripe in tests); empty means Stripe itself.

``charge`` creates and confirms a PaymentIntent in one request; without a
payment method it creates an unconfirmed one and returns its
``client_secret`` for Stripe.js to confirm in the browser
(``confirmCardPayment``), with the renter's Customer and ``receipt_email``
when given. ``retrieve`` reads a PaymentIntent back with its payment method
expanded (the card's brand and last four digits; a decline raises as in
``charge``).

Saved cards: ``customer_create`` makes a Customer (under the caller's
idempotency key, so two racing first payments of one renter make one),
``card_setup`` a SetupIntent for Stripe.js's ``confirmCardSetup``, ``cards``
lists the Customer's card PaymentMethods and ``card_detach`` detaches one
after checking that it is that Customer's. ``captured_charges``
lists the succeeded PaymentIntents created since a time (``created[gte]``,
every page: the SDK's auto-paging), for the money reconciler. ``refund`` refunds
part or all of a PaymentIntent. Both send the caller's idempotency key as the
request's ``Idempotency-Key``, so a retried call never charges or refunds
twice (Stripe keeps keys for at least 24 hours).

Error mapping:

* a card decline (``stripe.CardError``, or a PaymentIntent that comes back
  ``requires_payment_method`` with a ``last_payment_error``) raises
  ``PaymentDeclined`` with the PaymentIntent id when known and the decline
  code (``decline_code``, else ``code``);
* connection errors, timeouts, rate limits (429), conflicts (409) and 5xx
  raise ``GatewayError(retryable=True)``: the same call with the same
  idempotency key may succeed later;
* invalid requests (400/404, including reusing an idempotency key with other
  parameters), authentication (401) and permission (403) errors raise
  ``GatewayError(retryable=False)``;
* a webhook whose signature, timestamp or body does not verify raises
  ``SignatureError``.

Webhooks: ``parse_event`` verifies an event and keeps Stripe's type and
payload on the ``GatewayEvent``; ``translate_event`` maps it to a
``PaymentEvent``: ``payment_intent.succeeded`` is PAID,
``payment_intent.payment_failed`` is PAYMENT_FAILED (with the message of
``last_payment_error``), ``charge.refunded``, ``charge.refund.updated``,
``refund.created`` and ``refund.updated`` are REFUNDED (with the refund's id
and status: the event's Refund, or the newest refund listed on its Charge),
and every other type is IGNORED.

The SDK's own exception is kept as ``__cause__``. An amount that is not a
whole number of cents raises ``ValueError`` before any request is made. With
the default two network retries, one call can take up to about three times
``STRIPE_TIMEOUT_SECONDS`` before it gives up.
"""

import hashlib
import hmac
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

import stripe
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core.money import from_cents, to_cents
from marketplace.payments.base import (
    CapturedCharge,
    CardSetup,
    EventKind,
    GatewayError,
    GatewayEvent,
    PaymentDeclined,
    PaymentEvent,
    PaymentResult,
    RefundResult,
    SavedCard,
    SignatureError,
    ignored_event,
)

DEFAULT_MAX_NETWORK_RETRIES = 2

EVENT_KINDS = {
    "payment_intent.succeeded": EventKind.PAID,
    "payment_intent.payment_failed": EventKind.PAYMENT_FAILED,
    "charge.refunded": EventKind.REFUNDED,
    "charge.refund.updated": EventKind.REFUNDED,
    "refund.created": EventKind.REFUNDED,
    "refund.updated": EventKind.REFUNDED,
}


def sign_webhook_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header value for ``payload``, as Stripe computes it.

    ``t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<payload>" keyed by secret>``;
    the timestamp defaults to now. Used to sign events in tests.
    """
    if timestamp is None:
        timestamp = int(time.time())
    signed = f"{timestamp}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def _retryable(error: stripe.StripeError) -> bool:
    if isinstance(error, stripe.APIConnectionError | stripe.RateLimitError):
        return True
    if isinstance(
        error,
        stripe.InvalidRequestError
        | stripe.IdempotencyError
        | stripe.AuthenticationError
        | stripe.PermissionError
        | stripe.CardError,
    ):
        return False
    # APIError and anything unforeseen: a 409 or a 5xx is worth retrying.
    status = error.http_status
    return status is None or status == 409 or status >= 500


def _gateway_error(error: stripe.StripeError) -> GatewayError:
    message = error.user_message or str(error) or type(error).__name__
    return GatewayError(f"Stripe: {message}", retryable=_retryable(error))


def _id_of(value: Any) -> str:
    """An object's id whether the API returned it expanded or as an id string."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return value.get("id") or ""
    return getattr(value, "id", None) or ""


def _booking_id(obj: dict) -> str:
    return str((obj.get("metadata") or {}).get("booking_id") or "")


def _object_of(event: dict) -> dict:
    """The object an event is about (a PaymentIntent, a Charge, a Refund...)."""
    return (event.get("data") or {}).get("object") or {}


def _refund_of(obj: dict) -> dict:
    """The Refund an event's object is, or the newest one listed on its Charge ({} if none)."""
    if obj.get("object") == "refund":
        return obj
    refunds = (obj.get("refunds") or {}).get("data") or []
    return refunds[0] if refunds else {}


def _metadata(obj: dict) -> dict[str, str]:
    return {str(k): str(v) for k, v in (obj.get("metadata") or {}).items()}


def _card_of(method: Any) -> SavedCard | None:
    """The card of a PaymentMethod (an SDK object or a dict); ``None`` if it is not an expanded card."""
    if method is None or isinstance(method, str):
        return None
    data = method.to_dict() if hasattr(method, "to_dict") else dict(method)
    card = data.get("card") or {}
    if not card:
        return None
    return SavedCard(
        reference=data.get("id") or "",
        brand=str(card.get("brand") or "card"),
        last4=str(card.get("last4") or ""),
        exp_month=int(card.get("exp_month") or 0),
        exp_year=int(card.get("exp_year") or 0),
    )


def _captured(intent: dict) -> CapturedCharge:
    metadata = intent.get("metadata") or {}
    return CapturedCharge(
        reference=intent["id"],
        amount=from_cents(int(intent.get("amount_received") or intent.get("amount") or 0)),
        created=int(intent.get("created") or 0),
        booking_id=str(metadata.get("booking_id") or ""),
        purchase_id=str(metadata.get("usdai_purchase") or ""),
    )


class StripeGateway:
    name = "stripe"
    is_test = False
    browser_cards = True

    def __init__(
        self,
        *,
        api_key: str | None = None,
        api_base: str | None = None,
        webhook_secret: str | None = None,
        timeout: float | None = None,
        max_network_retries: int | None = None,
    ):
        api_key = settings.STRIPE_SECRET_KEY if api_key is None else api_key
        if not api_key:
            raise ImproperlyConfigured("The Stripe gateway needs STRIPE_SECRET_KEY.")
        api_base = settings.STRIPE_API_BASE if api_base is None else api_base
        self._webhook_secret = settings.STRIPE_WEBHOOK_SECRET if webhook_secret is None else webhook_secret
        timeout = settings.STRIPE_TIMEOUT_SECONDS if timeout is None else timeout
        retries = DEFAULT_MAX_NETWORK_RETRIES if max_network_retries is None else max_network_retries
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base.rstrip("/")} if api_base else None,
            max_network_retries=retries,
            http_client=stripe.RequestsClient(timeout=timeout),
        )

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
        params: dict[str, Any] = {
            "amount": to_cents(amount),
            "currency": "usd",
            "payment_method_types": ["card"],
            "metadata": {**(metadata or {}), "booking_id": booking_id},
        }
        if description:
            params["description"] = description
        if customer:
            params["customer"] = customer
        if receipt_email:
            params["receipt_email"] = receipt_email
        if payment_method:
            # Without one, the PaymentIntent waits for Stripe.js to confirm it
            # in the browser with the client secret returned below.
            params["payment_method"] = payment_method
            params["confirm"] = True
        try:
            intent = self._client.v1.payment_intents.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        except stripe.CardError as error:
            raise self._declined(error) from error
        except stripe.StripeError as error:
            raise _gateway_error(error) from error

        return self._result(intent)

    def retrieve(self, *, reference: str) -> PaymentResult:
        try:
            intent = self._client.v1.payment_intents.retrieve(reference, params={"expand": ["payment_method"]})
        except stripe.StripeError as error:
            raise _gateway_error(error) from error
        return self._result(intent)

    def _result(self, intent) -> PaymentResult:
        failure = getattr(intent, "last_payment_error", None)
        if intent.status == "requires_payment_method" and failure:
            raise PaymentDeclined(
                getattr(failure, "message", None) or "The card was declined.",
                reference=intent.id,
                code=getattr(failure, "decline_code", None) or getattr(failure, "code", None) or "",
            )
        metadata = getattr(intent, "metadata", None)
        return PaymentResult(
            reference=intent.id,
            status=intent.status,
            amount=from_cents(intent.amount),
            client_secret=getattr(intent, "client_secret", None) or "",
            card=_card_of(getattr(intent, "payment_method", None)),
            metadata=_metadata({"metadata": metadata.to_dict() if hasattr(metadata, "to_dict") else metadata}),
        )

    def _declined(self, error: stripe.CardError) -> PaymentDeclined:
        details = error.error
        reference = _id_of(getattr(details, "payment_intent", None))
        charge_id = getattr(details, "charge", None)
        if not reference and charge_id:
            # Stripe puts the PaymentIntent in the error; servers that only
            # name the failed charge (localstripe) need one more lookup.
            try:
                reference = _id_of(getattr(self._client.v1.charges.retrieve(charge_id), "payment_intent", None))
            except stripe.StripeError:
                reference = ""
        code = getattr(details, "decline_code", None) or error.code or ""
        return PaymentDeclined(error.user_message or "The card was declined.", reference=reference, code=code)

    def customer_create(self, *, email: str, name: str, idempotency_key: str) -> str:
        params: dict[str, Any] = {"email": email}
        if name:
            params["name"] = name
        try:
            customer = self._client.v1.customers.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as error:
            raise _gateway_error(error) from error
        return customer.id

    def card_setup(self, *, customer: str, idempotency_key: str) -> CardSetup:
        try:
            intent = self._client.v1.setup_intents.create(
                params={"customer": customer, "usage": "off_session", "payment_method_types": ["card"]},
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as error:
            raise _gateway_error(error) from error
        return CardSetup(reference=intent.id, client_secret=intent.client_secret or "")

    def cards(self, *, customer: str) -> list[SavedCard]:
        try:
            page = self._client.v1.payment_methods.list(params={"customer": customer, "type": "card"})
            methods = list(page.auto_paging_iter())
        except stripe.StripeError as error:
            raise _gateway_error(error) from error
        methods.sort(key=lambda m: int(getattr(m, "created", 0) or 0), reverse=True)  # newest first, as Stripe
        return [card for card in (_card_of(m) for m in methods) if card is not None]

    def card_detach(self, *, customer: str, reference: str) -> None:
        try:
            method = self._client.v1.payment_methods.retrieve(reference)
            if _id_of(getattr(method, "customer", None)) != customer:
                raise GatewayError("This card is not saved for you.", retryable=False)
            self._client.v1.payment_methods.detach(reference)
        except stripe.StripeError as error:
            raise _gateway_error(error) from error

    def refund(self, *, payment_reference: str, amount: Decimal, idempotency_key: str) -> RefundResult:
        try:
            refund = self._client.v1.refunds.create(
                params={"payment_intent": payment_reference, "amount": to_cents(amount)},
                options={"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as error:
            raise _gateway_error(error) from error
        return RefundResult(reference=refund.id, status=refund.status or "", amount=from_cents(refund.amount))

    def captured_charges(self, *, since: datetime, page_size: int = 100) -> list[CapturedCharge]:
        """The PaymentIntents created at or after ``since`` that succeeded (money captured).

        Stripe lists newest first and filters by creation time, not by status:
        every page is read (``auto_paging_iter``) and the succeeded ones kept.
        """
        try:
            page = self._client.v1.payment_intents.list(
                params={"created": {"gte": int(since.timestamp())}, "limit": page_size}
            )
            charges = [
                _captured(intent.to_dict()) for intent in page.auto_paging_iter() if intent.status == "succeeded"
            ]
        except stripe.StripeError as error:
            raise _gateway_error(error) from error
        return charges

    def parse_event(self, *, payload: bytes, signature_header: str) -> GatewayEvent:
        try:
            event = self._client.construct_event(payload, signature_header, self._webhook_secret)
        except (stripe.SignatureVerificationError, ValueError) as error:
            # ValueError: a body that is not UTF-8 JSON, or not a snapshot event.
            raise SignatureError(f"Stripe webhook rejected: {error}") from error

        data = event.to_dict()
        obj = _object_of(data)
        kind = obj.get("object")
        if kind == "payment_intent":
            reference = obj.get("id") or ""
            cents = obj.get("amount_received") or obj.get("amount") or 0
        elif kind == "charge":
            reference = _id_of(obj.get("payment_intent"))
            cents = obj.get("amount_refunded") or 0
        elif kind == "refund":
            reference = _id_of(obj.get("payment_intent"))
            cents = obj.get("amount") or 0
        else:
            reference = _id_of(obj.get("payment_intent"))
            cents = 0
        return GatewayEvent(
            id=data.get("id") or "",
            type=data.get("type") or "",
            payment_reference=reference,
            booking_id=_booking_id(obj),
            amount=from_cents(int(cents)),
            created=int(data.get("created") or 0),
            payload=data,
            metadata=_metadata(obj),
        )

    def translate_event(self, event: GatewayEvent) -> PaymentEvent:
        kind = EVENT_KINDS.get(event.type)
        if kind is None:
            return ignored_event(event)
        obj = _object_of(event.payload)
        failure = (obj.get("last_payment_error") or {}) if kind is EventKind.PAYMENT_FAILED else {}
        refund = _refund_of(obj) if kind is EventKind.REFUNDED else {}
        return PaymentEvent(
            kind=kind,
            payment_reference=event.payment_reference,
            booking_id=event.booking_id,
            amount=event.amount,
            failure_message=str(failure.get("message", "")),
            refund_reference=refund.get("id") or "",
            refund_status=refund.get("status") or "",
            metadata=event.metadata or _metadata(obj),
        )
