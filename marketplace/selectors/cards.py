"""Reads of a renter's saved cards: the gateway is their only record (``services.cards``)."""

import logging

from accounts.models import RenterProfile, User
from marketplace.payments import get_gateway
from marketplace.payments.base import GatewayError, SavedCard

logger = logging.getLogger(__name__)


def saved_cards(*, user: User) -> list[SavedCard]:
    """The cards saved for the renter's Customer, newest first ([] with no Customer, or if the
    gateway cannot be read: the page still lets the renter type a card)."""
    gateway = get_gateway()
    customer = RenterProfile.objects.filter(user=user).values_list("stripe_customer_id", flat=True).first()
    if not customer or not gateway.browser_cards:
        return []
    try:
        return gateway.cards(customer=customer)
    except GatewayError as exc:
        logger.warning("could not list the cards of %s: %s", user.pk, exc)
        return []
