"""Buying USDai under concurrency and crashes: a captured charge is always one purchase.

Issue 13, item 1. Real PostgreSQL, real threads, the Stripe gateway over HTTP
against localstripe (``tests/localstripe_server.py``): its PaymentIntents are
the charges counted. Crashes are injected deterministically by making the
step after the charge raise once, then the recovery path
(``usdai_purchases_sweep``) runs and the invariant is checked.
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from financing.models import ChainOp, JournalEntry, UsdaiPurchase, Wallet
from financing.selectors.ledger import usdai_balance
from financing.services import wallets
from financing.services.wallets import usdai_buy
from tests.concurrency import race
from tests.factories import make_lender

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

BUYERS = 6


@pytest.fixture(autouse=True)
def _needs_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL); CI runs it there")


def _intents(stripe_client) -> list:
    return list(stripe_client.v1.payment_intents.list(params={"limit": 100}).data)


def _buy_entries() -> int:
    return JournalEntry.objects.filter(key__startswith="usdai:buy:").count()


def _mints() -> int:
    return ChainOp.objects.filter(key__startswith="usdai:mint:").count()


def _crash_once(monkeypatch, name: str) -> None:
    """Make ``wallets.<name>`` raise the first time it is called (the worker dies there)."""
    original = getattr(wallets, name)
    calls = []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("worker killed after the charge")
        return original(*args, **kwargs)

    monkeypatch.setattr(wallets, name, crashing)


def test_six_new_lenders_buying_at_once_each_get_one_purchase_one_charge_and_their_own_wallet(
    stripe_mode, stripe_client
):
    # given six lenders without a wallet (the first purchase creates it)
    lenders = [make_lender() for _ in range(BUYERS)]

    # when they all buy $25 of USDai at the same moment
    outcomes = race(
        BUYERS, lambda i: usdai_buy(user=lenders[i], amount=Decimal("25.00"), payment_method="pm_card_visa")
    )

    # then every buy went through: no error
    assert outcomes == ["ok"] * BUYERS
    # six purchases, six ledger entries, six mints, six wallets with distinct (dense) indexes
    purchases = list(UsdaiPurchase.objects.order_by("pk"))
    assert [(p.status, p.amount) for p in purchases] == [("succeeded", Decimal("25.00"))] * BUYERS
    assert _buy_entries() == BUYERS
    assert _mints() == BUYERS
    assert sorted(Wallet.objects.values_list("index", flat=True)) == list(range(1, BUYERS + 1))
    assert {usdai_balance(user=lender) for lender in lenders} == {Decimal("25.00")}
    # and the gateway charged exactly once per purchase, each tagged with its purchase
    intents = _intents(stripe_client)
    assert len(intents) == BUYERS
    assert {i.status for i in intents} == {"succeeded"}
    assert {(i.id, i.metadata["usdai_purchase"]) for i in intents} == {(p.reference, str(p.pk)) for p in purchases}


def test_a_crash_after_the_charge_leaves_a_pending_purchase_that_the_sweep_completes_exactly_once(
    stripe_mode, stripe_client, monkeypatch
):
    # given a lender whose buy dies after the card was charged, before it is recorded
    lender = make_lender()
    _crash_once(monkeypatch, "journal_post")
    with pytest.raises(RuntimeError):
        usdai_buy(user=lender, amount=Decimal("40.00"), payment_method="pm_card_visa")

    # then the charge is already a purchase (pending), with nothing credited yet
    [intent] = _intents(stripe_client)
    assert intent.status == "succeeded" and intent.amount == 4000
    purchase = UsdaiPurchase.objects.get()
    assert (purchase.status, purchase.amount, purchase.user_id) == ("pending", Decimal("40.00"), lender.pk)
    assert intent.metadata["usdai_purchase"] == str(purchase.pk)
    assert (_buy_entries(), _mints(), usdai_balance(user=lender)) == (0, 0, Decimal("0"))

    # when the sweep runs at once, it leaves a buy that may still be in progress alone
    assert wallets.usdai_purchases_sweep() == {"succeeded": 0, "failed": 0, "pending": 0}

    # and when it runs after the grace period, it completes the purchase from the same charge
    later = timezone.now() + timedelta(minutes=6)
    assert wallets.usdai_purchases_sweep(now=later) == {"succeeded": 1, "failed": 0, "pending": 0}
    purchase.refresh_from_db()
    assert (purchase.status, purchase.reference) == ("succeeded", intent.id)
    assert [i.id for i in _intents(stripe_client)] == [intent.id]
    assert (_buy_entries(), _mints(), usdai_balance(user=lender)) == (1, 1, Decimal("40.00"))

    # and running it again changes nothing
    assert wallets.usdai_purchases_sweep(now=later + timedelta(minutes=5)) == {
        "succeeded": 0,
        "failed": 0,
        "pending": 0,
    }
    assert len(_intents(stripe_client)) == 1
    assert (_buy_entries(), _mints(), usdai_balance(user=lender)) == (1, 1, Decimal("40.00"))


def test_the_sweep_reads_back_a_known_payment_intent_and_racing_sweeps_complete_it_once(
    stripe_mode, stripe_client, monkeypatch
):
    # given a pending purchase whose PaymentIntent is known (as after a "processing" answer)
    lender = make_lender()
    _crash_once(monkeypatch, "journal_post")
    with pytest.raises(RuntimeError):
        usdai_buy(user=lender, amount=Decimal("30.00"), payment_method="pm_card_visa")
    [intent] = _intents(stripe_client)
    UsdaiPurchase.objects.update(reference=intent.id)

    # when four sweeps run at once
    later = timezone.now() + timedelta(minutes=6)
    outcomes = race(4, lambda i: wallets.usdai_purchases_sweep(now=later))

    # then one of them completed it, once: one charge, one entry, one mint
    assert outcomes == ["ok"] * 4
    assert UsdaiPurchase.objects.get().status == "succeeded"
    assert len(_intents(stripe_client)) == 1
    assert (_buy_entries(), _mints(), usdai_balance(user=lender)) == (1, 1, Decimal("30.00"))


def test_retrying_the_same_purchase_never_charges_twice(stripe_mode, stripe_client, monkeypatch):
    # given a buy under the caller's key that died after the charge
    lender = make_lender()
    _crash_once(monkeypatch, "journal_post")
    with pytest.raises(RuntimeError):
        usdai_buy(user=lender, amount=Decimal("50.00"), payment_method="pm_card_visa", idempotency_key="order-1")
    assert UsdaiPurchase.objects.get().status == "pending"

    # when the caller retries it, once and then four times at once
    first = usdai_buy(user=lender, amount=Decimal("50.00"), payment_method="pm_card_visa", idempotency_key="order-1")
    outcomes = race(
        4,
        lambda i: usdai_buy(
            user=lender, amount=Decimal("50.00"), payment_method="pm_card_visa", idempotency_key="order-1"
        ),
    )

    # then it is one purchase of one charge, credited once
    assert outcomes == ["ok"] * 4
    [intent] = _intents(stripe_client)
    assert (first.status, first.reference) == ("succeeded", intent.id)
    assert UsdaiPurchase.objects.count() == 1
    assert (_buy_entries(), _mints(), usdai_balance(user=lender)) == (1, 1, Decimal("50.00"))
    # and another key is another purchase
    usdai_buy(user=lender, amount=Decimal("50.00"), payment_method="pm_card_visa", idempotency_key="order-2")
    assert len(_intents(stripe_client)) == 2
    assert usdai_balance(user=lender) == Decimal("100.00")


def test_a_card_that_needs_3d_secure_is_refused_and_its_purchase_is_marked_failed(stripe_mode, stripe_client):
    # given a card that asks for 3-D Secure
    lender = make_lender()
    card = stripe_client.v1.payment_methods.create(
        params={"type": "card", "card": {"number": "4000002500003155", "exp_month": 12, "exp_year": 2030, "cvc": "123"}}
    )

    # when the lender buys with it
    with pytest.raises(ValidationError) as exc:
        usdai_buy(user=lender, amount=Decimal("20.00"), payment_method=card.id)

    # then it is refused with a clear message, and nothing is left half-written
    assert exc.value.message_dict == {"payment_method": ["This card needs a further step; use another card."]}
    [intent] = _intents(stripe_client)
    assert intent.status == "requires_action"
    purchase = UsdaiPurchase.objects.get()
    assert (purchase.status, purchase.reference) == ("failed", intent.id)
    assert (_buy_entries(), _mints(), usdai_balance(user=lender)) == (0, 0, Decimal("0"))
    # and the sweep leaves it alone
    later = timezone.now() + timedelta(minutes=6)
    assert wallets.usdai_purchases_sweep(now=later) == {"succeeded": 0, "failed": 0, "pending": 0}


def test_a_declined_card_marks_the_purchase_failed_and_a_retry_of_it_says_so(stripe_mode, stripe_client):
    lender = make_lender()
    with pytest.raises(ValidationError) as exc:
        usdai_buy(
            user=lender, amount=Decimal("20.00"), payment_method="pm_card_chargeCustomerFail", idempotency_key="k"
        )
    assert "declined" in exc.value.message_dict["payment_method"][0]
    assert UsdaiPurchase.objects.get().status == "failed"
    with pytest.raises(ValidationError):
        usdai_buy(
            user=lender, amount=Decimal("20.00"), payment_method="pm_card_chargeCustomerFail", idempotency_key="k"
        )
    assert UsdaiPurchase.objects.count() == 1
    assert (_buy_entries(), _mints(), usdai_balance(user=lender)) == (0, 0, Decimal("0"))


def test_the_offline_gateway_crash_is_recovered_by_the_sweep_too(monkeypatch):
    # given the embedded demo's gateway, and a buy that dies at its completion
    lender = make_lender()
    _crash_once(monkeypatch, "_purchase_complete")
    with pytest.raises(RuntimeError):
        usdai_buy(user=lender, amount=Decimal("15.00"))

    # when the sweep runs (twice), then the purchase is completed once, as a test payment
    later = timezone.now() + timedelta(minutes=6)
    assert wallets.usdai_purchases_sweep(now=later) == {"succeeded": 1, "failed": 0, "pending": 0}
    assert wallets.usdai_purchases_sweep(now=later) == {"succeeded": 0, "failed": 0, "pending": 0}
    purchase = UsdaiPurchase.objects.get()
    assert (purchase.gateway, purchase.is_test, purchase.status) == ("offline", True, "succeeded")
    assert purchase.reference.startswith("offpi_")
    assert (_buy_entries(), _mints(), usdai_balance(user=lender)) == (1, 1, Decimal("15.00"))


def test_stripe_gateway_retrieve_reads_a_payment_intent_back(stripe_gateway):
    charged = stripe_gateway.charge(
        booking_id="",
        amount=Decimal("12.34"),
        idempotency_key="retrieve-1",
        payment_method="pm_card_visa",
        metadata={"usdai_purchase": "7"},
    )

    assert stripe_gateway.retrieve(reference=charged.reference) == charged
    with pytest.raises(wallets.GatewayError) as exc:
        stripe_gateway.retrieve(reference="pi_missing")
    assert exc.value.retryable is False
