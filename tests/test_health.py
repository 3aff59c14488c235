"""/healthz, /readyz and /metrics (config.health, config.metrics) on real PostgreSQL and Redis."""

import re
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.test import override_settings

from core.tasks import HEARTBEAT_KEY, celery_heartbeat, heartbeat_record
from financing.models import ChainOp
from marketplace.models import Refund
from marketplace.services import bookings
from tests.factories import make_listing, next_hour
from tests.financing_fixtures import fund_vault

pytestmark = pytest.mark.django_db

H = timedelta(hours=1)

NOWHERE = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
}


def sample(body: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", body, re.MULTILINE)
    assert match, f"{name}{labels} not exposed"
    return float(match.group(1))


def test_healthz_answers_without_touching_anything(client):
    with override_settings(CACHES=NOWHERE):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_200_with_a_fresh_heartbeat(client):
    celery_heartbeat.delay()

    response = client.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "cache": True,
        "chain": True,
        "celery_heartbeat": True,
    }
    assert body["checks"]["chain"]["reason"] == "embedded chain"


def test_readyz_is_503_naming_a_missing_heartbeat(client):
    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["celery_heartbeat"] == {"ok": False, "reason": "no Celery heartbeat recorded"}
    assert body["checks"]["database"]["ok"] and body["checks"]["cache"]["ok"]


@override_settings(READINESS_HEARTBEAT_SECONDS=180)
def test_readyz_is_503_naming_a_stale_heartbeat(client):
    cache.set(HEARTBEAT_KEY, time.time() - 200, timeout=None)

    response = client.get("/readyz")

    assert response.status_code == 503
    check = response.json()["checks"]["celery_heartbeat"]
    assert check["ok"] is False
    assert check["reason"].startswith("last Celery heartbeat 20")


def test_readyz_is_503_not_500_when_the_cache_is_unreachable(client):
    heartbeat_record()
    with override_settings(CACHES=NOWHERE):
        from django.core.cache import caches

        caches["default"].close()
        response = client.get("/readyz")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == {"ok": True, "reason": ""}
    assert checks["cache"]["ok"] is False and "Connection" in checks["cache"]["reason"]
    assert checks["celery_heartbeat"]["ok"] is False


@override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}})
def test_readyz_trusts_the_embedded_mode_whose_heartbeat_no_other_process_can_read(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json()["checks"]["celery_heartbeat"] == {
        "ok": True,
        "reason": "process-local cache (embedded mode): no shared heartbeat to read",
    }


@override_settings(CHAIN_RPC_URL="http://127.0.0.1:1", CHAIN_RPC_TIMEOUT_SECONDS=0.5)
def test_readyz_is_503_when_the_remote_chain_node_is_down(client):
    heartbeat_record()

    response = client.get("/readyz")

    assert response.status_code == 503
    check = response.json()["checks"]["chain"]
    assert check["ok"] is False and "RPC unreachable" in check["reason"]


def test_readyz_and_healthz_refuse_writes(client):
    assert client.post("/healthz").status_code == 405
    assert client.post("/readyz").status_code == 405


def test_metrics_expose_requests_and_the_business_gauges(client, renter, owner):
    listing = make_listing(owner, gpu_count=4)
    start = next_hour(2)
    for _ in range(2):
        paid = bookings.booking_create(renter=renter, listing=listing, gpu_count=1, start=start, end=start + H)
        bookings.booking_pay(booking=paid, renter=renter)
    # One booking running now (made an hour before its start) holds one GPU of the four.
    running = next_hour(0)
    bookings.booking_create(
        renter=renter, listing=listing, gpu_count=1, start=running, end=running + 3 * H, now=running - H
    )
    Refund.objects.create(
        booking=paid,
        payment=paid.payments.get(),
        idempotency_key="metrics:refund",
        amount=Decimal("1.00"),
        reason=Refund.Reason.CANCELLATION,
    )
    ChainOp.objects.create(key="metrics:pending", contract="USDai", function="mint", args=["0x0", "1"])
    ChainOp.objects.create(
        key="metrics:failed", contract="USDai", function="mint", args=["0x0", "1"], status=ChainOp.Status.FAILED
    )
    client.get("/healthz")

    body = client.get("/metrics").content.decode()

    assert sample(body, "django_http_requests_total_by_method_total", '{method="GET"}') >= 1
    assert sample(body, "infrafi_bookings", '{status="confirmed"}') == 2
    assert sample(body, "infrafi_bookings", '{status="pending_payment"}') == 1
    assert sample(body, "infrafi_bookings", '{status="cancelled"}') == 0
    assert sample(body, "infrafi_gpus_in_service") == 4
    assert sample(body, "infrafi_gpus_held") == 1
    assert sample(body, "infrafi_gpu_utilisation_ratio") == 0.25
    assert sample(body, "infrafi_chain_outbox_backlog") == 1
    assert sample(body, "infrafi_chain_outbox_failed") == 1
    assert sample(body, "infrafi_refunds_pending") == 1


def test_metrics_report_the_vault_from_the_ledger(client):
    fund_vault(Decimal("20000.00"))

    body = client.get("/metrics").content.decode()

    assert sample(body, "infrafi_vault_nav_usd") == 20000.0
    assert sample(body, "infrafi_vault_cash_usd") == 20000.0


@override_settings(METRICS_TOKEN="s3cret-scrape")
def test_metrics_need_the_bearer_token_when_one_is_set(client):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401

    response = client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape"})

    assert response.status_code == 200
    assert "infrafi_bookings" in response.content.decode()
