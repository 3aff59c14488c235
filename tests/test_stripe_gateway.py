"""StripeGateway against localstripe, over HTTP, with the real stripe SDK.

The server comes from ``tests/localstripe_server.py``: ``stripe_gateway`` is
pointed at an emptied localstripe, ``stripe_client`` reads back what the
gateway created there.
"""

import json
import queue
import socket
import threading
import time
import uuid
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from marketplace.payments.base import (
    EventKind,
    GatewayError,
    GatewayEvent,
    PaymentDeclined,
    PaymentEvent,
    SignatureError,
)
from marketplace.payments.stripe_gateway import StripeGateway, sign_webhook_payload


def _key() -> str:
    return f"test-{uuid.uuid4().hex}"


def _charge_visa(gateway, amount=Decimal("123.45"), booking_id="booking-1", key=None):
    return gateway.charge(
        booking_id=booking_id,
        amount=amount,
        idempotency_key=key or _key(),
        payment_method="pm_card_visa",
        description="GPU rental",
    )


def _payment_intents(stripe_client) -> list:
    return list(stripe_client.v1.payment_intents.list(params={"limit": 100}).data)


def test_charge_with_visa_succeeds_and_is_recorded_at_stripe(stripe_gateway, stripe_client):
    # given a booking to pay with Stripe's test Visa card
    # when it is charged
    result = _charge_visa(stripe_gateway, amount=Decimal("123.45"), booking_id="booking-42")

    # then the PaymentIntent succeeded and the amount round-trips exactly
    assert result.status == "succeeded"
    assert result.reference.startswith("pi_")
    assert result.amount == Decimal("123.45")
    assert result.client_secret.startswith(result.reference)
    # and Stripe holds it in integer cents, in USD, with the booking id
    intent = stripe_client.v1.payment_intents.retrieve(result.reference)
    assert intent.amount == 12345
    assert intent.currency == "usd"
    assert intent.metadata.booking_id == "booking-42"
    assert intent.description == "GPU rental"


def test_charge_twice_with_one_idempotency_key_charges_once(stripe_gateway, stripe_client):
    # given a charge that went through
    key = _key()
    first = _charge_visa(stripe_gateway, key=key, booking_id="booking-7")

    # when the same call is retried with the same idempotency key
    second = _charge_visa(stripe_gateway, key=key, booking_id="booking-7")

    # then it answers the same PaymentIntent, and Stripe holds only that one
    assert second == first
    assert [intent.id for intent in _payment_intents(stripe_client)] == [first.reference]


def test_idempotency_key_reused_for_another_amount_is_not_retryable(stripe_gateway):
    # given a key already used for one charge
    key = _key()
    _charge_visa(stripe_gateway, key=key, amount=Decimal("10.00"))

    # when it is used again with other parameters
    with pytest.raises(GatewayError) as raised:
        _charge_visa(stripe_gateway, key=key, amount=Decimal("20.00"))

    # then Stripe refuses, and retrying the same call cannot help
    assert raised.value.retryable is False


def test_charge_without_payment_method_awaits_confirmation_in_browser(stripe_gateway, stripe_client):
    # given no payment method (Stripe.js will collect the card)
    # when a booking is charged
    result = stripe_gateway.charge(booking_id="booking-9", amount=Decimal("5.00"), idempotency_key=_key())

    # then the PaymentIntent waits for one, with a client secret to confirm it
    assert result.status == "requires_payment_method"
    assert result.amount == Decimal("5.00")
    assert result.client_secret.startswith(result.reference)
    assert stripe_client.v1.payment_intents.retrieve(result.reference).status == "requires_payment_method"


def test_declined_card_raises_payment_declined_with_the_intent(stripe_gateway, stripe_client):
    # given pm_card_chargeCustomerFail, a card that is declined when charged.
    # localstripe maps it to 4000000000000341 and refuses the charge with a 402
    # naming only the failed charge (Stripe also names the PaymentIntent): the
    # gateway finds the PaymentIntent through the charge. (pm_card_visa_chargeDeclined
    # is declined only when attached to a customer in localstripe, so it would succeed here.)
    # when it is charged
    with pytest.raises(PaymentDeclined) as raised:
        stripe_gateway.charge(
            booking_id="booking-13",
            amount=Decimal("42.00"),
            idempotency_key=_key(),
            payment_method="pm_card_chargeCustomerFail",
        )

    # then the decline names the PaymentIntent and the reason
    declined = raised.value
    assert declined.reference.startswith("pi_")
    assert declined.code == "card_declined"
    assert str(declined)
    intent = stripe_client.v1.payment_intents.retrieve(declined.reference)
    assert intent.status == "requires_payment_method"
    assert intent.last_payment_error.code == "card_declined"
    assert intent.metadata.booking_id == "booking-13"


def test_partial_refund_then_the_rest(stripe_gateway, stripe_client):
    # given a payment of 123.45
    payment = _charge_visa(stripe_gateway, amount=Decimal("123.45"))

    # when 23.45 is refunded, then the remaining 100.00
    first = stripe_gateway.refund(payment_reference=payment.reference, amount=Decimal("23.45"), idempotency_key=_key())
    rest = stripe_gateway.refund(payment_reference=payment.reference, amount=Decimal("100.00"), idempotency_key=_key())

    # then both refunds succeeded with exact amounts, and the charge is fully refunded
    assert first.status == "succeeded"
    assert first.reference.startswith("re_")
    assert first.amount == Decimal("23.45")
    assert rest.status == "succeeded"
    assert rest.amount == Decimal("100.00")
    assert rest.reference != first.reference
    intent = stripe_client.v1.payment_intents.retrieve(payment.reference, params={"expand": ["latest_charge"]})
    charge = intent.latest_charge
    assert charge.amount_refunded == 12345
    assert charge.refunded is True


def test_refund_twice_with_one_idempotency_key_refunds_once(stripe_gateway, stripe_client):
    # given a refund that went through
    payment = _charge_visa(stripe_gateway, amount=Decimal("50.00"))
    key = _key()
    first = stripe_gateway.refund(payment_reference=payment.reference, amount=Decimal("10.00"), idempotency_key=key)

    # when the same call is retried with the same key
    second = stripe_gateway.refund(payment_reference=payment.reference, amount=Decimal("10.00"), idempotency_key=key)

    # then it is the same refund, and only 10.00 left the account
    assert second == first
    refunds = stripe_client.v1.refunds.list(params={"payment_intent": payment.reference}).data
    assert [refund.id for refund in refunds] == [first.reference]


def test_refund_of_more_than_was_charged_is_not_retryable(stripe_gateway):
    # given a payment of 50.00, 30.00 of it refunded
    payment = _charge_visa(stripe_gateway, amount=Decimal("50.00"))
    stripe_gateway.refund(payment_reference=payment.reference, amount=Decimal("30.00"), idempotency_key=_key())

    # when 20.01 more is refunded
    with pytest.raises(GatewayError) as raised:
        stripe_gateway.refund(payment_reference=payment.reference, amount=Decimal("20.01"), idempotency_key=_key())

    # then Stripe refuses, and retrying cannot help
    assert raised.value.retryable is False


def test_refund_of_an_unknown_payment_is_not_retryable(stripe_gateway):
    # given a payment reference Stripe does not know
    # when it is refunded
    with pytest.raises(GatewayError) as raised:
        stripe_gateway.refund(payment_reference="pi_doesnotexist", amount=Decimal("1.00"), idempotency_key=_key())

    # then the error is final
    assert raised.value.retryable is False


def _payment_intent_event(stripe_client, reference: str) -> dict:
    """The payment_intent.succeeded event localstripe recorded for ``reference``, as JSON data."""
    events = stripe_client.v1.events.list(params={"type": "payment_intent.succeeded"}).data
    (event,) = [event for event in events if event.data.object.id == reference]
    return event.to_dict()


def test_parse_event_maps_a_signed_payment_intent_event(stripe_gateway, stripe_client, localstripe):
    # given the event localstripe recorded for a payment, signed as Stripe signs webhooks
    payment = _charge_visa(stripe_gateway, amount=Decimal("123.45"), booking_id="booking-5")
    event = _payment_intent_event(stripe_client, payment.reference)
    payload = json.dumps(event).encode()
    header = sign_webhook_payload(payload, localstripe.webhook_secret)

    # when the gateway parses it
    parsed = stripe_gateway.parse_event(payload=payload, signature_header=header)

    # then it is reduced to what we act on, with the full event alongside
    assert parsed == GatewayEvent(
        id=event["id"],
        type="payment_intent.succeeded",
        payment_reference=payment.reference,
        booking_id="booking-5",
        amount=Decimal("123.45"),
        created=event["created"],
    )
    assert parsed.id.startswith("evt_")
    assert parsed.payload["data"]["object"]["id"] == payment.reference
    assert json.loads(json.dumps(parsed.payload)) == event
    # and in the marketplace's words it is a payment made, with no Stripe field left to read
    assert stripe_gateway.translate_event(parsed) == PaymentEvent(
        kind=EventKind.PAID, payment_reference=payment.reference, booking_id="booking-5", amount=Decimal("123.45")
    )


def test_parse_event_maps_a_charge_refunded_event(stripe_gateway, localstripe):
    # given a charge.refunded event (localstripe never sends one), as Stripe shapes it
    event = {
        "id": "evt_refunded1",
        "object": "event",
        "type": "charge.refunded",
        "created": 1_760_000_000,
        "data": {
            "object": {
                "id": "ch_1",
                "object": "charge",
                "amount": 12345,
                "amount_refunded": 2345,
                "payment_intent": "pi_1",
                "metadata": {},
            }
        },
    }
    payload = json.dumps(event).encode()

    # when the gateway parses it
    parsed = stripe_gateway.parse_event(
        payload=payload, signature_header=sign_webhook_payload(payload, localstripe.webhook_secret)
    )

    # then the amount is what was refunded, on the charge's PaymentIntent
    assert parsed == GatewayEvent(
        id="evt_refunded1",
        type="charge.refunded",
        payment_reference="pi_1",
        booking_id="",
        amount=Decimal("23.45"),
        created=1_760_000_000,
    )
    assert stripe_gateway.translate_event(parsed).kind is EventKind.REFUNDED


def test_parse_event_maps_a_refund_event(stripe_gateway, localstripe):
    # given a refund.created event, whose object is the Refund
    event = {
        "id": "evt_refund1",
        "object": "event",
        "type": "refund.created",
        "created": 1_760_000_001,
        "data": {"object": {"id": "re_1", "object": "refund", "amount": 1000, "payment_intent": "pi_2"}},
    }
    payload = json.dumps(event).encode()

    # when the gateway parses it
    parsed = stripe_gateway.parse_event(
        payload=payload, signature_header=sign_webhook_payload(payload, localstripe.webhook_secret)
    )

    # then the amount is the refund's
    assert (parsed.payment_reference, parsed.amount, parsed.booking_id) == ("pi_2", Decimal("10.00"), "")
    # and the refund it is about is named by its id (no status in this payload)
    meaning = stripe_gateway.translate_event(parsed)
    assert (meaning.kind, meaning.refund_reference, meaning.refund_status) == (EventKind.REFUNDED, "re_1", "")


def _parse_signed(gateway, localstripe, event: dict) -> GatewayEvent:
    """``event`` as Stripe would deliver it (signed with the webhook secret), parsed by the gateway."""
    payload = json.dumps(event).encode()
    return gateway.parse_event(
        payload=payload, signature_header=sign_webhook_payload(payload, localstripe.webhook_secret)
    )


def test_translate_event_names_a_failed_payment_and_why(stripe_gateway, localstripe):
    # given a payment_intent.payment_failed event as Stripe shapes it
    event = {
        "id": "evt_failed1",
        "object": "event",
        "type": "payment_intent.payment_failed",
        "created": 1_760_000_002,
        "data": {
            "object": {
                "id": "pi_3",
                "object": "payment_intent",
                "amount": 5000,
                "metadata": {"booking_id": "booking-9"},
                "last_payment_error": {"message": "Your card has insufficient funds."},
            }
        },
    }
    parsed = _parse_signed(stripe_gateway, localstripe, event)

    # when it is translated, then
    meaning = stripe_gateway.translate_event(parsed)
    assert (meaning.kind, meaning.payment_reference, meaning.booking_id, meaning.failure_message) == (
        EventKind.PAYMENT_FAILED,
        "pi_3",
        "booking-9",
        "Your card has insufficient funds.",
    )


def test_translate_event_ignores_what_the_marketplace_does_not_act_on(stripe_gateway, localstripe):
    event = {
        "id": "evt_customer1",
        "object": "event",
        "type": "customer.created",
        "created": 1_760_000_003,
        "data": {"object": {"id": "cus_1", "object": "customer"}},
    }
    parsed = _parse_signed(stripe_gateway, localstripe, event)
    assert stripe_gateway.translate_event(parsed).kind is EventKind.IGNORED


_EVENT = json.dumps(
    {
        "id": "evt_1",
        "object": "event",
        "type": "payment_intent.succeeded",
        "created": 1_760_000_000,
        "data": {"object": {"id": "pi_1", "object": "payment_intent", "amount": 100, "metadata": {}}},
    }
).encode()


@pytest.mark.parametrize(
    ("payload", "header"),
    [
        pytest.param(_EVENT, lambda secret: sign_webhook_payload(_EVENT, "whsec_someone_else"), id="wrong-secret"),
        pytest.param(
            _EVENT.replace(b'"amount": 100', b'"amount": 999'),
            lambda secret: sign_webhook_payload(_EVENT, secret),
            id="tampered-body",
        ),
        pytest.param(_EVENT, lambda secret: "", id="missing-header"),
        pytest.param(_EVENT, lambda secret: "not a signature", id="garbled-header"),
        pytest.param(
            _EVENT,
            lambda secret: sign_webhook_payload(_EVENT, secret, timestamp=int(time.time()) - 3600),
            id="stale-timestamp",
        ),
        pytest.param(b"not json", lambda secret: sign_webhook_payload(b"not json", secret), id="signed-non-json"),
    ],
)
def test_parse_event_rejects_what_does_not_verify(stripe_gateway, localstripe, payload, header):
    # given a webhook whose signature, timestamp or body is not right
    # when the gateway parses it
    # then it refuses it
    with pytest.raises(SignatureError):
        stripe_gateway.parse_event(payload=payload, signature_header=header(localstripe.webhook_secret))


class _WebhookReceiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.deliveries.put((body, self.headers.get("Stripe-Signature", "")))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format, *args):
        pass


def test_parse_event_accepts_a_webhook_localstripe_delivers(stripe_gateway, localstripe):
    # given an endpoint registered with localstripe for payment_intent.succeeded
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _WebhookReceiver)
    receiver.deliveries = queue.Queue()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        localstripe.add_webhook_endpoint(
            f"http://127.0.0.1:{receiver.server_address[1]}/webhooks/stripe", events=["payment_intent.succeeded"]
        )

        # when a payment succeeds and localstripe posts the event
        payment = _charge_visa(stripe_gateway, amount=Decimal("77.70"), booking_id="booking-77")
        # (localstripe posts each event about a second late, to the endpoints
        # registered by then: events of earlier tests may arrive first)
        deliveries = []
        while not any(event.payment_reference == payment.reference for event in deliveries):
            body, header = receiver.deliveries.get(timeout=30)
            # then every delivery verifies
            deliveries.append(stripe_gateway.parse_event(payload=body, signature_header=header))
    finally:
        receiver.shutdown()
        receiver.server_close()

    # and the payment's maps to it
    (parsed,) = [event for event in deliveries if event.payment_reference == payment.reference]
    assert parsed.type == "payment_intent.succeeded"
    assert parsed.booking_id == "booking-77"
    assert parsed.amount == Decimal("77.70")


def test_unreachable_server_is_retryable():
    # given a gateway pointed at a port where nothing listens (bound here, never listening)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        gateway = StripeGateway(
            api_key="sk_test_unreachable",
            api_base=f"http://127.0.0.1:{closed.getsockname()[1]}",
            webhook_secret="whsec_unused",
            timeout=2,
            max_network_retries=0,
        )

        # when it charges and refunds
        with pytest.raises(GatewayError) as charging:
            _charge_visa(gateway)
        with pytest.raises(GatewayError) as refunding:
            gateway.refund(payment_reference="pi_1", amount=Decimal("1.00"), idempotency_key=_key())

    # then both failures may succeed on a later try
    assert charging.value.retryable is True
    assert refunding.value.retryable is True


def test_rejected_api_key_is_not_retryable(localstripe):
    # given a gateway whose key the server refuses (localstripe accepts only "sk_..." keys)
    gateway = StripeGateway(api_key="pk_test_publishable", api_base=localstripe.url, webhook_secret="whsec_unused")

    # when it charges
    with pytest.raises(GatewayError) as raised:
        _charge_visa(gateway)

    # then the error is final
    assert raised.value.retryable is False
