"""Liveness, readiness and the Prometheus scrape, for load balancers and monitoring.

``/healthz`` says the process answers and touches nothing else. ``/readyz`` checks
each part a request needs (the database, the cache, a remote chain node, a Celery
heartbeat) and answers 503 naming what failed: a failing check is never a 500.
``/metrics`` is django-prometheus's exposition plus ``config.metrics``'s business gauges,
behind ``METRICS_TOKEN`` when it is set. None of them logs in, checks CSRF or throttles.
"""

import hmac
import time
import uuid
from dataclasses import asdict, dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe
from django_prometheus.exports import ExportToDjangoView

from config import metrics
from core.tasks import HEARTBEAT_KEY
from financing.chain.client import rpc_chain

LOCMEM = "django.core.cache.backends.locmem.LocMemCache"


@dataclass(frozen=True)
class Check:
    ok: bool
    reason: str = ""


def _database() -> Check:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return Check(ok=True)


def _cache() -> Check:
    key, value = f"core:readyz:{uuid.uuid4().hex}", uuid.uuid4().hex
    cache.set(key, value, timeout=10)
    if cache.get(key) != value:
        return Check(ok=False, reason="a value written to the cache did not read back")
    cache.delete(key)
    return Check(ok=True)


def _chain() -> Check:
    if not settings.CHAIN_RPC_URL:
        return Check(ok=True, reason="embedded chain")
    rpc_chain(settings.CHAIN_RPC_URL).head()
    return Check(ok=True)


def _heartbeat() -> Check:
    if settings.CACHES["default"]["BACKEND"] == LOCMEM:
        # The embedded mode: ``run_scheduler`` writes its heartbeat into its own process's memory.
        return Check(ok=True, reason="process-local cache (embedded mode): no shared heartbeat to read")
    beat = cache.get(HEARTBEAT_KEY)
    if beat is None:
        return Check(ok=False, reason="no Celery heartbeat recorded")
    age = time.time() - float(beat)
    if age > settings.READINESS_HEARTBEAT_SECONDS:
        return Check(ok=False, reason=f"last Celery heartbeat {int(age)} s ago")
    return Check(ok=True)


CHECKS = {"database": _database, "cache": _cache, "chain": _chain, "celery_heartbeat": _heartbeat}


def _run(check) -> Check:
    # Any failure, whatever its type, is the check's answer: readiness must never be a 500.
    try:
        return check()
    except Exception as exc:
        return Check(ok=False, reason=f"{type(exc).__name__}: {exc}"[:200])


@csrf_exempt
@require_safe
@never_cache
def healthz(request):
    return JsonResponse({"status": "ok"})


@csrf_exempt
@require_safe
@never_cache
def readyz(request):
    results = {name: _run(check) for name, check in CHECKS.items()}
    ready = all(result.ok for result in results.values())
    body = {"status": "ok" if ready else "unavailable", "checks": {k: asdict(v) for k, v in results.items()}}
    return JsonResponse(body, status=200 if ready else 503)


@csrf_exempt
@require_safe
@never_cache
def metrics_view(request):
    token = settings.METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            response = HttpResponse("Unauthorized\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    metrics.register()
    return ExportToDjangoView(request)
