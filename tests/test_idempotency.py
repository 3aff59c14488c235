"""Idempotency-Key on every money-moving POST (core.idempotency), with the real services behind
(offline gateway, in-process chain), on PostgreSQL; and the USDai withdrawals endpoint."""

import threading
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from core.idempotency import idempotency_keys_purge, request_fingerprint
from core.models import IdempotencyKey
from core.tasks import idempotency_keys_purge_expired
from financing import api as financing_api
from financing.chain.client import usd_to_wei
from financing.models import ChainOp, JournalEntry, Loan, Redemption, UsdaiPurchase, VaultDeposit
from financing.selectors.ledger import usdai_balance
from financing.services import vault, wallets
from financing.services.wallets import usdai_buy
from marketplace.api import bookings as booking_api
from marketplace.models import Booking, Payment, Refund
from marketplace.services import bookings
from scheduler import api as scheduler_api
from scheduler.services import clusters
from tests.chain_fixtures import drain
from tests.concurrency import race
from tests.factories import PASSWORD, make_listing, make_renter, next_hour
from tests.financing_fixtures import approved_collateral

pytestmark = pytest.mark.django_db

OUTSIDE = "0x52908400098527886E0F7030069857D2E4169EE7"  # an EIP-55 test vector


def world() -> dict:
    """Everything a money-moving POST can change."""
    return {
        "bookings": list(Booking.objects.order_by("pk").values_list("pk", "status")),
        "payments": Payment.objects.count(),
        "refunds": Refund.objects.count(),
        "purchases": UsdaiPurchase.objects.count(),
        "journal": JournalEntry.objects.count(),
        "outbox": ChainOp.objects.count(),
        "deposits": VaultDeposit.objects.count(),
        "redemptions": list(Redemption.objects.order_by("pk").values_list("pk", "status")),
        "loans": Loan.objects.count(),
    }


@dataclass
class Call:
    user: object
    url: str
    body: dict
    other_url: str  # the same key used elsewhere: another path, or the same path with another body
    other_body: dict
    view: type
    handler: str  # the view method that runs the action
    status: int = 201


def _booking(renter, owner, gpus: int = 1) -> Booking:
    listing = make_listing(owner, gpu_count=4, price="2.00")
    start = next_hour(2)
    return bookings.booking_create(
        renter=renter, listing=listing, gpu_count=gpus, start=start, end=start + timedelta(hours=2)
    )


def _book(f) -> Call:
    listing = make_listing(f("owner"), gpu_count=4, price="2.00")
    start = next_hour(2)
    body = {
        "listing": listing.pk,
        "gpu_count": 1,
        "start": start.isoformat(),
        "end": (start + timedelta(hours=2)).isoformat(),
    }
    url = reverse("api:booking-list")
    return Call(f("renter"), url, body, url, {**body, "gpu_count": 2}, booking_api.BookingViewSet, "create")


def _pay(f) -> Call:
    renter, owner = f("renter"), f("owner")
    booking, other = _booking(renter, owner), _booking(renter, owner)
    url = reverse("api:booking-pay", args=[booking.public_id])
    other_url = reverse("api:booking-pay", args=[other.public_id])
    return Call(renter, url, {}, other_url, {}, booking_api.BookingViewSet, "pay", 200)


def _cancel(f) -> Call:
    renter, owner = f("renter"), f("owner")
    booking, other = _booking(renter, owner), _booking(renter, owner)
    url = reverse("api:booking-cancel", args=[booking.public_id])
    other_url = reverse("api:booking-cancel", args=[other.public_id])
    return Call(renter, url, {}, other_url, {}, booking_api.BookingViewSet, "cancel", 200)


def _quick_book(f) -> Call:
    owner = f("owner")
    listing = make_listing(owner, gpu_count=4, price="2.00")
    clusters.cluster_create_simulated(owner=owner.owner_membership.company, name="sim", servers=[listing.server])
    body = {"gpu_model": "H100 80GB", "gpu_count": 1, "hours": 1}
    url = reverse("api:quick-book")
    return Call(f("renter"), url, body, url, {**body, "hours": 2}, scheduler_api.QuickBookApi, "post")


def _usdai_buy(f) -> Call:
    f("chain")
    url = reverse("api:wallet-usdai")
    return Call(f("renter"), url, {"amount": "25.00"}, url, {"amount": "26.00"}, financing_api.UsdaiBuyApi, "post")


def _usdai_send(f) -> Call:
    f("chain")
    renter = f("renter")
    usdai_buy(user=renter, amount=Decimal("100"))
    url = reverse("api:wallet-usdai-withdrawals")
    body = {"address": OUTSIDE, "amount": "5", "reauth": PASSWORD}
    return Call(renter, url, body, url, {**body, "amount": "6"}, financing_api.UsdaiWithdrawalsApi, "post")


def _deposit(f) -> Call:
    f("chain")
    lender = f("lender")
    usdai_buy(user=lender, amount=Decimal("100"))
    url = reverse("api:vault-deposits")
    return Call(lender, url, {"amount": "10"}, url, {"amount": "11"}, financing_api.VaultDepositApi, "post")


def _redeem(f) -> Call:
    f("chain")
    f("settings").VAULT_MIN_REDEMPTION = Decimal("10")
    lender = f("lender")
    usdai_buy(user=lender, amount=Decimal("100"))
    vault.vault_deposit(user=lender, amount=Decimal("100"))
    drain()
    url = reverse("api:vault-redemptions")
    return Call(lender, url, {"shares": "20"}, url, {"shares": "21"}, financing_api.RedemptionsApi, "post")


def _redemption_cancel(f) -> Call:
    f("chain")
    f("settings").VAULT_MIN_REDEMPTION = Decimal("10")
    lender = f("lender")
    usdai_buy(user=lender, amount=Decimal("100"))
    vault.vault_deposit(user=lender, amount=Decimal("100"))
    drain()
    first = vault.redemption_request(user=lender, shares_amount=Decimal("20"))
    second = vault.redemption_request(user=lender, shares_amount=Decimal("15"))
    drain()
    url = reverse("api:vault-redemption-cancel", args=[first.pk])
    other_url = reverse("api:vault-redemption-cancel", args=[second.pk])
    return Call(lender, url, {}, other_url, {}, financing_api.RedemptionCancelApi, "post", 200)


def _loan_apply(f) -> Call:
    owner = f("owner")
    record = approved_collateral(owner, f("operator"), value="20000", purchase_price="30000", at=timezone.now())
    body = {"collateral": record.pk, "amount": "12000.00", "tenor_months": 12}
    url = reverse("api:owner-loans")
    return Call(owner, url, body, url, {**body, "amount": "11000.00"}, financing_api.LoanApplyApi, "post")


ENDPOINTS = {
    "book": _book,
    "pay": _pay,
    "cancel": _cancel,
    "quick-book": _quick_book,
    "usdai-buy": _usdai_buy,
    "usdai-send": _usdai_send,
    "vault-deposit": _deposit,
    "redeem": _redeem,
    "redemption-cancel": _redemption_cancel,
    "loan-apply": _loan_apply,
}


@pytest.fixture(params=list(ENDPOINTS))
def call(request) -> Call:
    return ENDPOINTS[request.param](request.getfixturevalue)


def post(user, url, body, key=None, **extra):
    client = APIClient()
    client.force_authenticate(user)
    client.raise_request_exception = False  # a crash is what a client sees: a 500
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(url, body, format="json", **headers, **extra)


# --- Every endpoint ----------------------------------------------------------------------------


def test_the_same_key_and_request_replays_the_answer_and_acts_once(call):
    before = world()

    first = post(call.user, call.url, call.body, key="k-1")
    assert first.status_code == call.status, first.content
    acted = world()
    assert acted != before
    assert "Idempotent-Replayed" not in first.headers

    # the same body with its keys in another order is the same request
    again = post(call.user, call.url, dict(reversed(list(call.body.items()))), key="k-1")

    assert again.status_code == call.status
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert world() == acted  # no second booking, charge, ledger entry or outbox row


def test_the_same_key_with_another_request_is_409_and_does_nothing(call):
    assert post(call.user, call.url, call.body, key="k-2").status_code == call.status
    acted = world()

    other = post(call.user, call.other_url, call.other_body, key="k-2")

    assert other.status_code == 409
    assert "can only be used with the same parameters they were first used with" in other.content.decode()
    assert world() == acted


def test_without_a_key_nothing_changes(call):
    before = world()
    response = post(call.user, call.url, call.body)
    assert response.status_code == call.status
    assert world() != before and not IdempotencyKey.objects.exists()


def test_a_crash_after_the_key_row_is_written_leaves_the_key_retryable_and_the_retry_acts_once(call, monkeypatch):
    before = world()
    real = getattr(call.view, call.handler)

    def crash(self, request, *args, **kwargs):
        assert IdempotencyKey.objects.filter(user=call.user, key="k-3", response_status=None).exists()
        raise RuntimeError("worker died")

    monkeypatch.setattr(call.view, call.handler, crash)
    crashed = post(call.user, call.url, call.body, key="k-3")
    assert crashed.status_code == 500
    assert world() == before
    row = IdempotencyKey.objects.get(user=call.user, key="k-3")
    assert row.response_status is None  # not saved: the client may retry

    monkeypatch.setattr(call.view, call.handler, real)
    retried = post(call.user, call.url, call.body, key="k-3")
    assert retried.status_code == call.status and "Idempotent-Replayed" not in retried.headers
    acted = world()
    assert acted != before
    replayed = post(call.user, call.url, call.body, key="k-3")
    assert replayed.json() == retried.json() and replayed.headers["Idempotent-Replayed"] == "true"
    assert world() == acted


def test_a_crash_after_the_action_before_its_answer_is_saved_does_not_act_twice_on_retry(call, monkeypatch):
    """The worker dies between the service and saving its answer. A database-only view's
    work commits with its answer, so nothing survives and the retry is a first attempt; a
    view that calls a gateway keeps what it did, and the retry does not do it again."""
    from core.idempotency import Idempotent

    before = world()
    real = Idempotent._idempotency_finish

    def crash(self, response):
        raise RuntimeError("worker died")

    monkeypatch.setattr(Idempotent, "_idempotency_finish", crash)
    assert post(call.user, call.url, call.body, key="k-4").status_code == 500
    crashed = world()
    atomic = call.view.idempotent_atomic
    if atomic is True or call.handler in (atomic or ()):
        assert crashed == before
    else:
        assert crashed != before  # the gateway was called: what it did stays

    monkeypatch.setattr(Idempotent, "_idempotency_finish", real)
    retried = post(call.user, call.url, call.body, key="k-4")
    acted = world()
    if crashed == before:
        assert retried.status_code == call.status and acted != before
    else:
        assert acted == crashed  # the booking's or purchase's own state: no second charge or refund
    assert post(call.user, call.url, call.body, key="k-4").json() == retried.json()
    assert world() == acted


def test_the_header_is_documented_on_every_money_moving_operation():
    schema = SchemaGenerator().get_schema(request=None, public=True)
    suffixes = [
        "/bookings/",
        "/bookings/{public_id}/pay/",
        "/bookings/{public_id}/cancel/",
        "/quick-book/",
        "/wallet/usdai/",
        "/wallet/usdai/withdrawals/",
        "/vault/deposits/",
        "/vault/redemptions/",
        "/vault/redemptions/{id}/cancel/",
        "/owner/loans/",
    ]
    paths = schema["paths"]
    for suffix in suffixes:
        (path,) = [p for p in paths if p.endswith("/api/v1" + suffix)]
        headers = [p["name"] for p in paths[path]["post"].get("parameters", []) if p["in"] == "header"]
        assert headers == ["Idempotency-Key"], path
    # and not on a POST that moves no money
    assert not [p for p in paths["/api/v1/bookings/quote/"]["post"].get("parameters", []) if p["in"] == "header"]


# --- Users, refusals, validation ----------------------------------------------------------------


@pytest.fixture
def listing(owner):
    return make_listing(owner, gpu_count=1, price="2.00")


def _book_body(listing) -> dict:
    start = next_hour(2)
    return {
        "listing": listing.pk,
        "gpu_count": 1,
        "start": start.isoformat(),
        "end": (start + timedelta(hours=1)).isoformat(),
    }


def test_two_users_with_the_same_key_are_independent(owner, renter):
    listing = make_listing(owner, gpu_count=2, price="2.00")
    body = _book_body(listing)
    other = make_renter()

    mine = post(renter, reverse("api:booking-list"), body, key="shared")
    theirs = post(other, reverse("api:booking-list"), body, key="shared")

    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in theirs.headers and mine.json()["id"] != theirs.json()["id"]
    assert sorted(Booking.objects.values_list("renter_id", flat=True)) == sorted([renter.pk, other.pk])


def test_a_service_refusal_is_saved_and_replayed(listing, renter):
    # given the one GPU is taken by someone else
    body = _book_body(listing)
    first_come = post(make_renter(), reverse("api:booking-list"), body)
    assert first_come.status_code == 201
    refused = post(renter, reverse("api:booking-list"), body, key="late")
    assert refused.status_code == 409 and "free for that window" in refused.content.decode()

    # when the GPU frees up and the same request comes again under the same key
    taken = Booking.objects.get()
    bookings.booking_cancel(booking=taken, renter=taken.renter)
    again = post(renter, reverse("api:booking-list"), body, key="late")

    # then the refusal is what that key answers: the endpoint ran once
    assert again.status_code == 409 and again.json() == refused.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert not Booking.objects.filter(renter=renter).exists()
    # a new key is a new request
    assert post(renter, reverse("api:booking-list"), body, key="later").status_code == 201


def test_a_balance_refusal_is_replayed_after_the_balance_grows(chain, lender):
    usdai_buy(user=lender, amount=Decimal("5"))
    url = reverse("api:vault-deposits")
    refused = post(lender, url, {"amount": "10"}, key="dep")
    assert refused.status_code == 400 and "You hold 5.00 USDai" in refused.content.decode()
    usdai_buy(user=lender, amount=Decimal("50"))
    before = world()

    again = post(lender, url, {"amount": "10"}, key="dep")

    assert (
        again.status_code == 400 and again.json() == refused.json() and again.headers["Idempotent-Replayed"] == "true"
    )
    assert world() == before


def test_a_validation_400_is_not_saved_so_the_corrected_request_runs_under_the_same_key(listing, renter):
    body = _book_body(listing)
    bad = post(renter, reverse("api:booking-list"), {**body, "gpu_count": 0}, key="fix-me")
    assert bad.status_code == 400 and "gpu_count" in bad.content.decode()
    assert not IdempotencyKey.objects.exists() and not Booking.objects.exists()

    fixed = post(renter, reverse("api:booking-list"), body, key="fix-me")

    assert fixed.status_code == 201 and "Idempotent-Replayed" not in fixed.headers
    assert Booking.objects.count() == 1
    assert post(renter, reverse("api:booking-list"), body, key="fix-me").headers["Idempotent-Replayed"] == "true"


def test_refusals_before_the_view_runs_are_not_saved(listing, renter, owner):
    body = _book_body(listing)
    # an owner may not book: 403, before the endpoint
    assert post(owner, reverse("api:booking-list"), body, key="k").status_code == 403
    anonymous = APIClient().post(reverse("api:booking-list"), body, format="json", HTTP_IDEMPOTENCY_KEY="k")
    assert anonymous.status_code == 401
    assert not IdempotencyKey.objects.exists()


@pytest.mark.parametrize(
    "key, message",
    [("x" * 256, "1 to 255 printable"), ("", "1 to 255 printable"), ("tab\there", "1 to 255 printable")],
)
def test_a_bad_key_is_400_and_does_nothing(listing, renter, key, message):
    response = post(renter, reverse("api:booking-list"), _book_body(listing), key=key)
    assert response.status_code == 400 and message in response.content.decode()
    assert not Booking.objects.exists() and not IdempotencyKey.objects.exists()


def test_a_key_of_255_characters_is_taken(listing, renter):
    response = post(renter, reverse("api:booking-list"), _book_body(listing), key="k" * 255)
    assert response.status_code == 201 and IdempotencyKey.objects.get().key == "k" * 255


# --- Crash after the action; expiry ---------------------------------------------------------------


def test_a_crash_after_the_purchase_retries_into_the_same_charge(chain, renter, monkeypatch):
    # given a worker that dies after the USDai was bought, before the answer was saved
    real = wallets.usdai_buy

    def buy_then_die(**kwargs):
        real(**kwargs)
        raise RuntimeError("worker died")

    monkeypatch.setattr(wallets, "usdai_buy", buy_then_die)
    url = reverse("api:wallet-usdai")
    assert post(renter, url, {"amount": "25.00"}, key="buy").status_code == 500
    purchase = UsdaiPurchase.objects.get()
    acted = world()

    # when the client retries under the same key
    monkeypatch.setattr(wallets, "usdai_buy", real)
    retried = post(renter, url, {"amount": "25.00"}, key="buy")

    # then it answers that purchase: charged once, credited once, minted once
    assert retried.status_code == 201 and retried.json()["id"] == purchase.pk
    assert world() == acted
    assert usdai_balance(user=renter) == Decimal("25.000000")


def test_an_expired_key_is_a_new_key_and_the_purge_deletes_expired_ones(listing, owner, renter, settings):
    settings.IDEMPOTENCY_KEY_TTL_HOURS = 24
    body = _book_body(listing)
    first = post(renter, reverse("api:booking-list"), body, key="old")
    assert first.status_code == 201
    bookings.booking_cancel(booking=Booking.objects.get(), renter=renter)
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=25))

    again = post(renter, reverse("api:booking-list"), body, key="old")

    assert again.status_code == 201 and "Idempotent-Replayed" not in again.headers
    assert again.json()["id"] != first.json()["id"] and Booking.objects.count() == 2

    # the purge: the expired key goes, the fresh one stays
    post(renter, reverse("api:booking-list"), {**body, "gpu_count": 1}, key="fresh")  # replay or refusal, saved
    IdempotencyKey.objects.filter(key="old").update(created_at=timezone.now() - timedelta(hours=25))
    assert idempotency_keys_purge() == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["fresh"]
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=24, seconds=1))
    assert idempotency_keys_purge_expired.delay().get() == 1
    assert not IdempotencyKey.objects.exists()


def test_the_purge_runs_on_the_beat_schedule_and_in_run_scheduler(renter):
    import io

    from django.core.management import call_command

    IdempotencyKey.objects.create(
        user=renter,
        key="stale",
        method="POST",
        path="/x/",
        fingerprint="0" * 64,
        created_at=timezone.now() - timedelta(days=2),
    )
    out = io.StringIO()
    call_command("run_scheduler", "--once", stdout=out)
    assert "core-idempotency-keys-purge: 1" in out.getvalue()
    assert not IdempotencyKey.objects.exists()


# --- Concurrency on PostgreSQL -----------------------------------------------------------------------


needs_postgres = pytest.mark.skipif(connection.vendor != "postgresql", reason="advisory locks are PostgreSQL's")


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_two_requests_with_the_same_key_at_once_act_once(catalogue, owner, renter):
    listing = make_listing(owner, gpu_count=4, price="2.00")
    body = _book_body(listing)
    answers: list = []

    def attempt(i: int) -> None:
        answers.append(post(renter, reverse("api:booking-list"), body, key="race"))

    outcomes = race(2, attempt)

    assert outcomes == ["ok", "ok"]
    assert Booking.objects.count() == 1
    codes = sorted(a.status_code for a in answers)
    assert codes in ([201, 201], [201, 409])
    if codes == [201, 201]:
        assert answers[0].json() == answers[1].json()
    else:
        (busy,) = [a for a in answers if a.status_code == 409]
        assert "being processed" in busy.content.decode()


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_request_while_the_first_still_runs_is_409_then_the_answer_is_replayed(catalogue, owner, renter, monkeypatch):
    listing = make_listing(owner, gpu_count=4, price="2.00")
    body = _book_body(listing)
    inside, release = threading.Event(), threading.Event()
    real = bookings.booking_create

    def slow_create(**kwargs):
        inside.set()
        assert release.wait(10)
        return real(**kwargs)

    monkeypatch.setattr(bookings, "booking_create", slow_create)
    first: list = []

    def run_first() -> None:
        try:
            first.append(post(renter, reverse("api:booking-list"), body, key="slow"))
        finally:
            connection.close()

    worker = threading.Thread(target=run_first)
    worker.start()
    try:
        assert inside.wait(10)
        busy = post(renter, reverse("api:booking-list"), body, key="slow")
        assert busy.status_code == 409 and "being processed" in busy.content.decode()
        assert not Booking.objects.exists()
    finally:
        release.set()
        worker.join()

    (answer,) = first
    assert answer.status_code == 201
    replayed = post(renter, reverse("api:booking-list"), body, key="slow")
    assert replayed.status_code == 201 and replayed.json() == answer.json()
    assert Booking.objects.count() == 1


@needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_dead_workers_key_is_not_wedged(catalogue, owner, renter):
    """A row without an answer, and its lock free (the dead worker's connection closed), runs again."""
    listing = make_listing(owner, gpu_count=4, price="2.00")
    body = _book_body(listing)
    url = reverse("api:booking-list")
    IdempotencyKey.objects.create(
        user=renter, key="dead", method="POST", path=url, fingerprint=request_fingerprint(body)
    )

    response = post(renter, url, body, key="dead")

    assert response.status_code == 201 and Booking.objects.count() == 1
    assert IdempotencyKey.objects.get(key="dead").response_status == 201


# --- USDai withdrawals -----------------------------------------------------------------------------


def test_a_withdrawal_debits_the_balance_and_queues_the_transfer(chain, renter):
    usdai_buy(user=renter, amount=Decimal("100"))

    response = post(
        renter, reverse("api:wallet-usdai-withdrawals"), {"address": OUTSIDE, "amount": "30.5", "reauth": PASSWORD}
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["address"], body["amount"], body["status"], body["tx_hash"]) == (OUTSIDE, "30.500000", "pending", "")
    op = ChainOp.objects.get(pk=body["id"])
    assert (op.contract, op.function, op.args) == ("USDai", "transfer", [OUTSIDE, str(usd_to_wei(Decimal("30.5")))])
    assert usdai_balance(user=renter) == Decimal("69.500000")


@pytest.mark.parametrize(
    "body, field, message",
    [
        ({"address": OUTSIDE.lower(), "amount": "5", "reauth": PASSWORD}, "address", "checksummed (EIP-55)"),
        ({"address": "0x123", "amount": "5", "reauth": PASSWORD}, "address", "checksummed (EIP-55)"),
        (
            {"address": OUTSIDE, "amount": "100.01", "reauth": PASSWORD},
            "amount",
            "You hold 100.00 USDai; send at most that.",
        ),
        ({"address": OUTSIDE, "amount": "-1", "reauth": PASSWORD}, "amount", "positive amount"),
        ({"address": OUTSIDE, "amount": "lots", "reauth": PASSWORD}, "amount", ""),
        ({"amount": "5"}, "address", ""),
    ],
)
def test_a_bad_withdrawal_is_400_with_a_field_message_and_sends_nothing(chain, renter, body, field, message):
    usdai_buy(user=renter, amount=Decimal("100"))
    before = world()

    response = post(renter, reverse("api:wallet-usdai-withdrawals"), body)

    assert response.status_code == 400
    text = response.content.decode()
    assert field in text and message in text
    assert world() == before and usdai_balance(user=renter) == Decimal("100.000000")


def test_withdrawals_need_a_login(chain):
    response = APIClient().post(
        reverse("api:wallet-usdai-withdrawals"), {"address": OUTSIDE, "amount": "1"}, format="json"
    )
    assert response.status_code == 401
