"""Stripe.js on the card pages: its settings for the template, and the CSP the page needs.

Stripe.js is the one script a page may load from outside (Stripe requires it
from js.stripe.com; tests point ``STRIPE_JS_URL`` at localstripe's copy). Only
the pages that take a card load it, and only with a gateway that takes cards
in the browser (``browser_cards``); those responses alone widen their
Content-Security-Policy: the script's origin in ``script-src`` and
``frame-src`` (Stripe's card fields and 3-D Secure challenge are frames of
it, and of hooks.stripe.com), and Stripe's API in ``connect-src`` (the
browser confirms the PaymentIntent there). Every other page keeps the strict
policy of ``config/settings/base.py``.
"""

from dataclasses import dataclass
from urllib.parse import urlsplit

from csp.constants import SELF
from django.conf import settings

STRIPE_API = "https://api.stripe.com"


@dataclass(frozen=True)
class StripeJs:
    publishable_key: str
    js_url: str


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def stripe_js(gateway) -> StripeJs | None:
    """What the page needs to load Stripe.js, or ``None`` when the gateway takes no card in the browser."""
    if not getattr(gateway, "browser_cards", False):
        return None
    return StripeJs(publishable_key=settings.STRIPE_PUBLISHABLE_KEY, js_url=settings.STRIPE_JS_URL)


def allow_stripe_js(response, config: StripeJs | None):
    """Widen ``response``'s CSP for Stripe.js (``config``); unchanged when it is ``None``."""
    if config is None:
        return response
    script = _origin(config.js_url)
    frames = [script]
    if urlsplit(config.js_url).hostname == "js.stripe.com":
        frames.append("https://hooks.stripe.com")
    api = _origin(settings.STRIPE_API_BASE) if settings.STRIPE_API_BASE else STRIPE_API
    update = {"script-src": [script], "frame-src": frames, "connect-src": [SELF, api]}
    current = getattr(response, "_csp_update", None) or {}
    response._csp_update = {**current, **update}
    return response
