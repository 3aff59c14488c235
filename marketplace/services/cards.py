"""Renters' cards at the payment gateway: the Customer, saving a card, removing one.

A renter has one Customer at the card gateway (``RenterProfile.stripe_customer_id``),
made on first need: the first card payment, or the first card saved on the
billing page. It is created under an idempotency key derived from the user id,
so two racing first payments ask for the same Customer and the gateway answers
both with it (the second waits for, or replays, the first request); the id is
then stored only where none is stored yet, so the first writer wins and the
other reads it back. No row is locked during the gateway call.

A card is saved in the browser: ``card_setup_start`` makes a SetupIntent for
the Customer and Stripe.js confirms it (``confirmCardSetup``) with the card
Element; the gateway attaches the card to the Customer, and the saved cards
are read back from the gateway (``marketplace.selectors.cards``): nothing about
a card is stored here. With a gateway that takes no cards (the embedded
demo's offline gateway) there is no Customer and nothing to save.
"""

import logging
import uuid

from django.core.exceptions import ValidationError

from accounts.models import RenterProfile, User
from marketplace.payments import get_gateway
from marketplace.payments.base import CardSetup, GatewayError

logger = logging.getLogger(__name__)


def renter_customer(*, user: User, gateway_name: str | None = None) -> str:
    """The renter's Customer id at the gateway, created on first need ("" when the gateway keeps none).

    Raises ``GatewayError`` when the gateway cannot make one.
    """
    gateway = get_gateway(gateway_name)
    if not gateway.browser_cards:
        return ""
    profile, _ = RenterProfile.objects.get_or_create(user=user)
    if profile.stripe_customer_id:
        return profile.stripe_customer_id
    customer = gateway.customer_create(
        email=user.email, name=profile.billing_name, idempotency_key=f"renter-{user.pk}-customer"
    )
    RenterProfile.objects.filter(pk=profile.pk, stripe_customer_id="").update(stripe_customer_id=customer)
    return RenterProfile.objects.values_list("stripe_customer_id", flat=True).get(pk=profile.pk)


def card_setup_start(*, user: User) -> CardSetup:
    """A SetupIntent for the renter's Customer, for the browser to confirm with a card."""
    gateway = get_gateway()
    if not gateway.browser_cards:
        raise ValidationError({"card": "Cards are not saved in this demo: its payments are test payments."})
    try:
        customer = renter_customer(user=user)
        return gateway.card_setup(customer=customer, idempotency_key=f"renter-{user.pk}-setup-{uuid.uuid4().hex}")
    except GatewayError as exc:
        logger.warning("card setup for %s failed: %s", user.pk, exc)
        raise ValidationError({"card": "The payment service did not answer; try again in a minute."}) from exc


def card_remove(*, user: User, reference: str) -> None:
    """Detach one of the renter's saved cards at the gateway."""
    gateway = get_gateway()
    customer = RenterProfile.objects.filter(user=user).values_list("stripe_customer_id", flat=True).first()
    if not customer or not gateway.browser_cards:
        raise ValidationError({"card": "You have no saved cards."})
    try:
        gateway.card_detach(customer=customer, reference=reference)
    except GatewayError as exc:
        if exc.retryable:
            raise ValidationError({"card": "The payment service did not answer; try again in a minute."}) from exc
        raise ValidationError({"card": "This card is not one of your saved cards."}) from exc
