"""Payment-gateway webhooks: store every event once, then handle it idempotently.

Receiving is not one transaction with handling: a verified event is stored
first (unique by gateway and event id), so an event whose handling fails is
kept with its error and handled again by a retry. Handling asks the gateway's
adapter what the stored event means (``translate_event``, a ``PaymentEvent``)
and acts on that alone: the provider's event types and payload fields stay in
the adapter. Handling tolerates any order of delivery: a success is never
undone by a later failure event, a success that overtakes our own record of
the payment finds it by the booking id the event carries, a refund event
changes only the refund it names (by its id at the gateway), and replays
change nothing.

A payment is a booking's when its event names a booking; otherwise its
metadata may name another purpose (``{"usdai_purchase": "42"}``), and the
success or failure goes to the handler that purpose's app registered in
``marketplace.payments.purposes`` (financing, from its ``AppConfig.ready``):
this app never imports the apps above it. A booking payment's success is
followed by a best-effort read of the card it was paid with, for the invoice.
"""

import logging
from decimal import Decimal

from django.db import IntegrityError
from django.db.models import F
from django.utils import timezone

from marketplace.models import WebhookEvent
from marketplace.payments import get_gateway, purposes
from marketplace.payments.base import EventKind, GatewayError, GatewayEvent, PaymentDeclined
from marketplace.services.bookings import payment_failed, payment_succeeded, refund_event_apply

logger = logging.getLogger(__name__)


def webhook_receive(*, gateway_name: str, payload: bytes, signature_header: str) -> WebhookEvent:
    """Verify, store once, handle. Raises ``SignatureError`` for a bad signature
    (nothing stored); re-raises a handling error after storing it."""
    event = get_gateway(gateway_name).parse_event(payload=payload, signature_header=signature_header)
    normalized = {
        "payment_reference": event.payment_reference,
        "booking_id": event.booking_id,
        "amount": str(event.amount),
        "metadata": event.metadata,
        "raw": event.payload,
    }
    try:
        row, _ = WebhookEvent.objects.get_or_create(
            gateway=gateway_name,
            event_id=event.id,
            defaults={"type": event.type, "payload": normalized, "created": event.created},
        )
    except IntegrityError:
        row = WebhookEvent.objects.get(gateway=gateway_name, event_id=event.id)
    if row.processed_at is None:
        webhook_handle(row=row)
    return row


def _event_of(row: WebhookEvent) -> GatewayEvent:
    data = row.payload
    return GatewayEvent(
        id=row.event_id,
        type=row.type,
        payment_reference=data.get("payment_reference", ""),
        booking_id=data.get("booking_id", ""),
        amount=Decimal(data.get("amount", "0")),
        created=row.created,
        payload=data.get("raw", {}),
        metadata=data.get("metadata") or {},
    )


def webhook_handle(*, row: WebhookEvent) -> None:
    """Apply one stored event; marks it processed, or records the error and re-raises."""
    stored = _event_of(row)
    WebhookEvent.objects.filter(pk=row.pk).update(attempts=F("attempts") + 1)
    try:
        event = get_gateway(row.gateway).translate_event(stored)
        if event.kind is EventKind.PAID and not event.booking_id and purposes.purpose_of(event.metadata):
            purposes.paid(event.metadata, reference=event.payment_reference, amount=event.amount)
        elif event.kind is EventKind.PAID:
            booking = payment_succeeded(
                gateway=row.gateway,
                reference=event.payment_reference,
                amount=event.amount,
                booking_public_id=event.booking_id,
            )
            if booking is not None:
                _card_record(row.gateway, event.payment_reference, event.amount)
        elif event.kind is EventKind.PAYMENT_FAILED and not event.booking_id and purposes.purpose_of(event.metadata):
            purposes.failed(event.metadata, reference=event.payment_reference, message=event.failure_message)
        elif event.kind is EventKind.PAYMENT_FAILED:
            payment_failed(gateway=row.gateway, reference=event.payment_reference, message=event.failure_message)
        elif event.kind is EventKind.REFUNDED:
            refund_event_apply(
                gateway=row.gateway,
                payment_reference=event.payment_reference,
                refund_reference=event.refund_reference,
                refund_status=event.refund_status,
                amount=event.amount,
            )
        else:
            logger.info("webhook %s of type %s needs no action", row.event_id, row.type)
    except Exception as exc:
        WebhookEvent.objects.filter(pk=row.pk).update(error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    WebhookEvent.objects.filter(pk=row.pk).update(processed_at=timezone.now(), error="")


def _card_record(gateway_name: str, reference: str, amount: Decimal) -> None:
    """Keep the card a booking was paid with (the event does not carry it); best effort."""
    try:
        result = get_gateway(gateway_name).retrieve(reference=reference)
    except (GatewayError, PaymentDeclined) as exc:
        logger.info("card of payment %s not read: %s", reference, exc)
        return
    if result.card is not None:
        payment_succeeded(gateway=gateway_name, reference=reference, amount=amount, card=result.card)


def webhooks_retry() -> int:
    """Periodic: handle stored events whose handling failed before."""
    handled = 0
    for row in WebhookEvent.objects.filter(processed_at__isnull=True).order_by("created", "id")[:500]:
        try:
            webhook_handle(row=row)
            handled += 1
        except Exception:
            logger.exception("webhook %s still failing", row.event_id)
    return handled
