import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests import factories

pytest_plugins = [
    "tests.localstripe_server",
    "tests.financing_fixtures",
    "tests.kube_emulator",
    "tests.hardhat_node",
    "tests.chain_fixtures",
]


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Per-process caches (the search form's catalogue) must not outlive a test's database."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _fresh_placement_engine():
    """The process's placement engine (scheduler.engine) must not outlive a test's database."""
    from scheduler.engine import reset_engine

    reset_engine()
    yield
    reset_engine()


@pytest.fixture
def renter(db):
    return factories.make_renter()


@pytest.fixture
def owner(db):
    return factories.make_owner()


@pytest.fixture
def other_owner(db):
    return factories.make_owner()


@pytest.fixture
def lender(db):
    return factories.make_lender()


@pytest.fixture
def operator(db):
    return factories.make_operator()


@pytest.fixture
def client_as():
    def _client(user) -> Client:
        client = Client()
        if user is not None:
            client.force_login(user)
        return client

    return _client


@pytest.fixture
def api_as():
    def _client(user) -> APIClient:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return _client


@pytest.fixture
def catalogue(transactional_db):
    """Transactional tests start from a flushed database: reload the catalogue rows
    that the data migration put there for every other test."""
    from marketplace.catalogue import load_catalogue
    from marketplace.models import GpuModel, Region

    load_catalogue(GpuModel, Region)


@pytest.fixture
def stripe_mode(settings, localstripe):
    """The Stripe gateway, pointed at a fresh localstripe."""
    localstripe.reset()
    settings.PAYMENT_GATEWAY = "stripe"
    settings.STRIPE_SECRET_KEY = localstripe.api_key
    settings.STRIPE_API_BASE = localstripe.url
    settings.STRIPE_WEBHOOK_SECRET = localstripe.webhook_secret
    settings.STRIPE_TIMEOUT_SECONDS = 5
    return localstripe
