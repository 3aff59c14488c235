"""The payment webhook endpoint (not a DRF view: the raw body is what is signed)."""

import logging

from django.core.exceptions import ImproperlyConfigured
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from marketplace.payments.base import SignatureError
from marketplace.services.webhooks import webhook_receive

logger = logging.getLogger(__name__)


@csrf_exempt
@require_POST
def stripe_webhook(request):
    try:
        row = webhook_receive(
            gateway_name="stripe",
            payload=request.body,
            signature_header=request.headers.get("Stripe-Signature", ""),
        )
    except SignatureError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    except ImproperlyConfigured:
        # No Stripe keys (the offline gateway): there is no endpoint to deliver to.
        # Nothing was stored, and a 404 is not worth Stripe's retries.
        return JsonResponse({"error": "Stripe webhooks are not configured here."}, status=404)
    except Exception:
        # Stored with its error; Stripe delivers again and the retry task runs too.
        logger.exception("stripe webhook handling failed")
        return JsonResponse({"error": "handling failed; will retry"}, status=500)
    return JsonResponse({"received": row.event_id})
