"""Schemathesis against the API in-process (WSGI, no network): every operation of
the served schema, a bounded and seeded number of generated requests each, as a
user who holds every role (with data to act on) and once anonymously.

Each response must not be a server error and must conform to the schema: a
documented status code, a documented content type and a body that matches.
"""

from datetime import timedelta
from decimal import Decimal

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts import services as account_services
from financing.services.vault import redemption_request, vault_deposit
from financing.services.wallets import usdai_buy
from marketplace.services import bookings
from scheduler.services import clusters, jobs
from tests.chain_fixtures import drain
from tests.factories import make_listing, next_hour
from tests.financing_fixtures import T0, approved_collateral

# What a WSGI server sets for every request (the in-process client does not).
CLIENT = {"REMOTE_ADDR": "203.0.113.7"}

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Small and fixed: the run is part of CI (well under two minutes) and the same on every machine.
MAX_EXAMPLES = 6
SEED = 20261202
CSRF_SECRET = "fuzzcsrfsecretfuzzcsrfsecret0123"  # 32 characters: Django accepts the unmasked secret


def _config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
            # Generated examples only: no coverage sweep or stateful links (bounded time).
            "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
        }
    )


@pytest.fixture(autouse=True)
def _keep_the_test_connection():
    """The WSGI handler closes the database connection after each request; the test's
    transaction lives on it (django.test.Client disconnects the same handlers)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def everyone(chain, operator, settings):
    """A staff user who is also a renter, an owner and a lender, with something of each to act on."""
    user = operator
    account_services.renter_role_grant(user=user)
    account_services.owner_company_create(user=user, name="Fuzz Co")
    account_services.lender_role_grant(user=user, wallet_address="")
    user.refresh_from_db()
    listing = make_listing(user, gpu_count=4)
    approved_collateral(user, user, value="20000", purchase_price="30000", at=T0)
    start = next_hour(2)
    booking = bookings.booking_create(
        renter=user, listing=listing, gpu_count=1, start=start, end=start + timedelta(hours=2)
    )
    bookings.booking_pay(booking=booking, renter=user)
    cluster = clusters.cluster_create_simulated(owner=user.owner_membership.company, name="fuzz")
    jobs.job_submit(booking=booking, renter=user, name="train", image="busybox", gpu_count=1)
    usdai_buy(user=user, amount=Decimal("500"))
    vault_deposit(user=user, amount=Decimal("100"))
    drain()  # the shares are minted
    settings.VAULT_MIN_REDEMPTION = Decimal("10")
    redemption_request(user=user, shares_amount=Decimal("10"))
    assert cluster.pk and booking.pk
    return user


# Loaded once at collection, from the app itself (no database access: the schema is built from the code).
schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application(), config=_config())


def _session(user) -> dict:
    """The cookies and CSRF header of a signed-in browser session."""
    client = Client()
    client.force_login(user)
    session = client.cookies[django_settings.SESSION_COOKIE_NAME].value
    return {
        "cookies": {django_settings.SESSION_COOKIE_NAME: session, django_settings.CSRF_COOKIE_NAME: CSRF_SECRET},
        "headers": {"X-CSRFToken": CSRF_SECRET},
    }


@schema.parametrize()
# The fixtures' data is shared by an operation's examples, as a client's would be.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_api_as_a_user_with_every_role(case, everyone):
    response = case.call_and_validate(**_session(everyone), checks=CHECKS, environ_base=CLIENT)
    assert response.status_code != 401  # the session is taken: the operations ran as the user


@schema.parametrize()
# The fixtures' data is shared by an operation's examples, as a client's would be.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_api_anonymously(db, case):
    case.call_and_validate(checks=CHECKS, environ_base=CLIENT)
