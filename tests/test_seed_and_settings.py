"""The demo seed is idempotent; production settings refuse to start without secrets."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from allauth.account.models import EmailAddress
from django.core.management import call_command
from django.urls import reverse

from accounts.models import LenderProfile, OwnerCompany, OwnerMembership, RenterProfile, User
from core.management.commands.seed_demo import DEMO_PASSWORD
from marketplace.models import Gpu, Region, Server

ROOT = Path(__file__).resolve().parent.parent
MODELS = [User, EmailAddress, OwnerCompany, OwnerMembership, RenterProfile, LenderProfile, Server, Gpu]


def row_counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in MODELS}


@pytest.mark.django_db
def test_seed_demo_twice_gives_the_same_rows():
    call_command("seed_demo", stdout=io.StringIO())
    first = row_counts()
    call_command("seed_demo", stdout=io.StringIO())
    assert row_counts() == first
    # a quarter of the trace's 1,213 nodes, across three owners and several regions
    assert first["Server"] == 304
    assert first["OwnerCompany"] == 3
    assert Server.objects.values("region").distinct().count() >= 4
    assert Server.objects.values("owner").distinct().count() == 3
    # the GPUs are the trace's: node 0 of the list has two P100s
    node0 = Server.objects.get(hostname="openb-node-0000")
    assert list(node0.gpus.values_list("model__trace_code", flat=True)) == ["P100", "P100"]
    assert first["Gpu"] == sum(s.gpus.count() for s in Server.objects.all())


@pytest.mark.django_db
def test_demo_logins_work(client):
    call_command("seed_demo", stdout=io.StringIO())
    response = client.post(reverse("account_login"), {"login": "renter@infrafi.test", "password": DEMO_PASSWORD})
    assert response.status_code == 302
    assert client.get(reverse("dashboard"), follow=True).request["PATH_INFO"] == reverse("marketplace:renter_dashboard")
    assert Region.objects.count() == 6


def run_with_settings(module: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    prefixes = ("DJANGO_", "DATABASE_URL", "CELERY_", "REDIS_URL", "TRUSTED_PROXY_COUNT")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    clean.update(env, DJANGO_SETTINGS_MODULE=module)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


PRODUCTION_ENV = {
    "DJANGO_SECRET_KEY": "x" * 64 + "production-like-secret-with-enough-entropy-0123456789",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
    "DJANGO_ALLOWED_HOSTS": "infrafi.example",
    "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "TRUSTED_PROXY_COUNT": "1",
    "SCHEDULER_ENCRYPTION_KEYS": "yJqDLgAe5-QZ-5KO4_ARRaZR6fGQDE4vWWjCSQvzP5A=",
    "CHAIN_RPC_URL": "http://127.0.0.1:8545",
    "CHAIN_SIGNER_KEY": "0x" + "11" * 32,
    "CHAIN_CUSTODY_SEED": "production-custody-seed",
}


# Without the shared cache each worker counts lockouts and throttles alone; without
# the proxy count the per-address limits see the proxy (or trust a forged header).
@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "REDIS_URL", "TRUSTED_PROXY_COUNT"])
def test_production_settings_without_a_required_variable_refuse_to_start(missing):
    result = run_with_settings("config.settings.production", {k: v for k, v in PRODUCTION_ENV.items() if k != missing})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and missing in result.stderr


def test_production_settings_start_with_their_secrets():
    result = run_with_settings("config.settings.production", PRODUCTION_ENV)
    assert "ImproperlyConfigured" not in result.stderr
    assert "System check identified" in result.stdout + result.stderr


def test_embedded_settings_need_no_environment():
    result = run_with_settings("config.settings.local", {})
    assert result.returncode == 0, result.stderr


@pytest.mark.django_db
def test_models_and_migrations_agree():
    out = io.StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()
