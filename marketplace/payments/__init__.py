"""Payment gateways behind one interface (``base.PaymentGateway``).

``stripe_gateway.StripeGateway`` talks to Stripe (or any Stripe-compatible
server) through the official SDK; ``offline.OfflineGateway`` settles at once
for the embedded demo and is labelled as a test payment. ``get_gateway()``
returns the one the settings choose. Nothing outside this package imports
the ``stripe`` SDK. ``stripe_js`` gives the card pages what they need to load
Stripe.js (and the CSP to allow it); ``purposes`` lets the apps above this one
register what to do with payments made for them (USDai purchases).
"""

from django.conf import settings
from django.utils.module_loading import import_string

from marketplace.payments.base import PaymentGateway


def get_gateway(name: str | None = None) -> PaymentGateway:
    name = name or settings.PAYMENT_GATEWAY
    return import_string(settings.PAYMENT_GATEWAYS[name])()
