"""The on-chain pages and API: USDai wallet, sUSDai vault, paying with USDai, proof of
revenue, title metadata, the operators' chain page. Against the in-process EVM."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from eth_utils import to_checksum_address

from financing import merkle
from financing.chain.client import shares, usd_to_wei
from financing.models import ChainAlert, ChainOp, JournalEntry, Redemption, UsdaiPurchase, VaultDeposit, Wallet
from financing.services.epochs import epoch_close
from financing.services.outbox import chainop_enqueue
from financing.services.revenue import settlements_journal
from financing.services.titles import collateral_record, record_hash
from financing.services.vault import vault_deposit
from financing.services.wallets import usdai_buy
from marketplace.models import Booking, Settlement
from marketplace.services import bookings
from tests.api_errors import field_errors
from tests.chain_fixtures import drain
from tests.factories import PASSWORD, make_listing, make_renter, next_hour
from tests.financing_fixtures import T0, approved_collateral

OUTSIDE = "0x52908400098527886E0F7030069857D2E4169EE7"  # an EIP-55 test vector


def _written() -> tuple[int, int, int]:
    return ChainOp.objects.count(), VaultDeposit.objects.count(), JournalEntry.objects.count()


def _funded(user, amount: str) -> None:
    usdai_buy(user=user, amount=Decimal(amount))
    drain()


# --- Wallet --------------------------------------------------------------------------------


def test_buying_usdai_on_the_wallet_page_shows_the_balance_and_mints_it(chain, renter, client_as):
    client = client_as(renter)
    page = client.get(reverse("financing:wallet"))
    assert page.status_code == 200 and "Created with your first USDai" in page.content.decode()
    assert "Test payment" in page.content.decode()

    response = client.post(reverse("financing:wallet"), {"action": "buy", "buy-amount": "250.00"})

    assert response.status_code == 302
    purchase = UsdaiPurchase.objects.get()
    assert (purchase.user, purchase.amount, purchase.gateway, purchase.is_test) == (
        renter,
        Decimal("250.00"),
        "offline",
        True,
    )
    html = client.get(reverse("financing:wallet")).content.decode()
    address = Wallet.objects.get(user=renter).address
    assert '<div class="stat" id="usdai-balance">250.00 USDai</div>' in html
    assert address in html and purchase.reference in html
    drain()
    assert chain.call("USDai", "balanceOf", address) == 250 * 10**18


def test_buying_a_fraction_of_a_cent_is_refused_on_the_form(chain, renter, client_as):
    response = client_as(renter).post(reverse("financing:wallet"), {"action": "buy", "buy-amount": "0.50"})
    assert response.status_code == 400
    assert "Buy between $1.00 and $1,000,000.00." in response.content.decode()
    assert not UsdaiPurchase.objects.exists() and ChainOp.objects.count() == 0


@pytest.mark.parametrize(
    "address, message",
    [
        (OUTSIDE.lower(), "Enter a checksummed (EIP-55) Ethereum address"),
        ("not-an-address", "Enter a checksummed (EIP-55) Ethereum address"),
        ("0x52908400098527886E0F7030069857D2E4169EE", "Enter a checksummed (EIP-55) Ethereum address"),
    ],
)
def test_sending_to_a_bad_address_is_400_and_sends_nothing(chain, renter, client_as, address, message):
    _funded(renter, "100")
    before = _written()

    response = client_as(renter).post(
        reverse("financing:wallet"),
        {"action": "send", "send-address": address, "send-amount": "10", "send-reauth": PASSWORD},
    )

    assert response.status_code == 400
    assert message in response.content.decode()
    assert _written() == before


def test_sending_usdai_to_a_checksummed_address_reaches_it_on_chain(chain, renter, client_as):
    _funded(renter, "100")
    client = client_as(renter)

    too_much = client.post(
        reverse("financing:wallet"),
        {"action": "send", "send-address": OUTSIDE, "send-amount": "101", "send-reauth": PASSWORD},
    )
    assert too_much.status_code == 400 and "You hold 100.00 USDai; send at most that." in too_much.content.decode()
    ok = client.post(
        reverse("financing:wallet"),
        {"action": "send", "send-address": OUTSIDE, "send-amount": "40.5", "send-reauth": PASSWORD},
    )

    assert ok.status_code == 302
    drain()
    assert chain.call("USDai", "balanceOf", OUTSIDE) == usd_to_wei(Decimal("40.5"))
    assert "59.50 USDai" in client.get(reverse("financing:wallet")).content.decode()


def test_wallet_page_needs_a_login(client_as):
    response = client_as(None).get(reverse("financing:wallet"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


# --- Vault ---------------------------------------------------------------------------------


def test_depositing_more_than_the_balance_is_400_with_the_field_message_and_writes_nothing(chain, lender, client_as):
    _funded(lender, "100")
    before = _written()

    response = client_as(lender).post(reverse("financing:vault"), {"action": "deposit", "deposit-amount": "150"})

    assert response.status_code == 400
    assert "You hold 100.00 USDai; deposit at most that." in response.content.decode()
    assert _written() == before
    assert not VaultDeposit.objects.exists()


def test_deposit_then_redeem_on_the_vault_page(chain, lender, client_as, settings):
    settings.VAULT_MIN_REDEMPTION = Decimal("10")
    _funded(lender, "100")
    client = client_as(lender)

    deposit = client.post(reverse("financing:vault"), {"action": "deposit", "deposit-amount": "60"})
    assert deposit.status_code == 302
    drain()
    held = chain.call("SUSDai", "balanceOf", Wallet.objects.get(user=lender).address)
    assert VaultDeposit.objects.get().shares == shares(held) == Decimal("59.999999999999")  # the vault's virtual offset
    page = client.get(reverse("financing:vault"))
    html = page.content.decode()
    assert page.status_code == 200
    assert '<dd id="position-shares">60.000000</dd>' in html
    assert '<dd id="position-value">$60.00</dd>' in html
    assert '<div class="stat" id="share-price">1.000000</div>' in html
    assert "not enough history" in html  # no VaultDay yet
    assert "At least 10 sUSDai" in html

    below = client.post(reverse("financing:vault"), {"action": "redeem", "redeem-shares": "5"})
    assert below.status_code == 400 and "The smallest redemption is 10 sUSDai, or everything you hold." in (
        below.content.decode()
    )
    assert not Redemption.objects.exists()
    above = client.post(reverse("financing:vault"), {"action": "redeem", "redeem-shares": "61"})
    assert above.status_code == 400 and "You can redeem at most 60.000000 sUSDai." in above.content.decode()

    ok = client.post(reverse("financing:vault"), {"action": "redeem", "redeem-shares": "20"})
    assert ok.status_code == 302
    drain()
    redemption = Redemption.objects.get()
    assert (redemption.status, redemption.shares_left) == (Redemption.Status.QUEUED, Decimal("20"))
    html = client.get(reverse("financing:vault")).content.decode()
    assert '<dd id="position-available">40.000000</dd>' in html
    assert "Queued" in html and '<td class="num">1</td>' in html  # first in the queue


def test_the_vault_page_is_for_lenders(renter, client_as):
    assert client_as(renter).get(reverse("financing:vault")).status_code == 403
    anonymous = client_as(None).get(reverse("financing:vault"))
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]


# --- API -----------------------------------------------------------------------------------


def test_api_wallet_buy_and_balance(chain, renter, api_as):
    api = api_as(renter)
    assert api.get("/api/v1/wallet/").json() == {"address": "", "balance": "0.000000"}

    bought = api.post("/api/v1/wallet/usdai/", {"amount": "75.25"}, format="json")

    assert bought.status_code == 201
    assert bought.json()["amount"] == "75.25" and bought.json()["is_test"] is True
    assert api.get("/api/v1/wallet/").json() == {
        "address": Wallet.objects.get(user=renter).address,
        "balance": "75.250000",
    }
    bad = api.post("/api/v1/wallet/usdai/", {"amount": "0.10"}, format="json")
    assert bad.status_code == 400 and field_errors(bad) == {"amount": ["Buy between $1.00 and $1,000,000.00."]}


def test_api_deposit_and_redemption_with_field_errors(chain, lender, api_as, settings):
    settings.VAULT_MIN_REDEMPTION = Decimal("10")
    _funded(lender, "100")
    api = api_as(lender)
    before = _written()

    too_much = api.post("/api/v1/vault/deposits/", {"amount": "100.000001"}, format="json")
    assert too_much.status_code == 400
    assert field_errors(too_much) == {"amount": ["You hold 100.00 USDai; deposit at most that."]}
    garbage = api.post("/api/v1/vault/deposits/", {"amount": "lots"}, format="json")
    assert garbage.status_code == 400 and list(field_errors(garbage)) == ["amount"]
    assert _written() == before

    deposit = api.post("/api/v1/vault/deposits/", {"amount": "50"}, format="json")
    assert deposit.status_code == 201
    assert deposit.json()["amount"] == "50.000000" and deposit.json()["status"] == "pending"
    drain()
    vault = api.get("/api/v1/vault/").json()
    assert vault["position"]["shares"] == f"{VaultDeposit.objects.get().shares:.18f}" == "49.999999999999000000"
    assert vault["position"]["value"] == "49.999999"  # rounded down to the micro-dollar
    assert vault["summary"]["redeem_price"] == "1.000000" and vault["summary"]["apr_7"] is None

    below = api.post("/api/v1/vault/redemptions/", {"shares": "9.99"}, format="json")
    assert below.status_code == 400
    assert field_errors(below) == {"shares": ["The smallest redemption is 10 sUSDai, or everything you hold."]}
    assert not Redemption.objects.exists()
    queued = api.post("/api/v1/vault/redemptions/", {"shares": "12.5"}, format="json")
    assert queued.status_code == 201
    assert queued.json()["status"] == "requested" and queued.json()["position"] == 1
    drain()
    (row,) = api.get("/api/v1/vault/redemptions/").json()
    assert (row["status"], row["shares_left"], row["position"], row["value"]) == (
        "queued",
        "12.500000000000000000",
        1,
        "12.500000",
    )


def test_api_vault_is_for_lenders(renter, api_as):
    api = api_as(renter)
    assert api.get("/api/v1/vault/").status_code == 403
    assert api.post("/api/v1/vault/deposits/", {"amount": "1"}, format="json").status_code == 403
    assert api_as(None).get("/api/v1/wallet/").status_code == 401


# --- Pay with USDai -------------------------------------------------------------------------


def _booking(renter, owner) -> Booking:
    listing = make_listing(owner, price="2.00")
    start = next_hour(2)
    return bookings.booking_create(
        renter=renter, listing=listing, gpu_count=1, start=start, end=start + timedelta(hours=3)
    )


def test_a_renter_pays_a_booking_with_usdai_from_the_checkout_page(chain, renter, owner, client_as):
    booking = _booking(renter, owner)
    client = client_as(renter)
    checkout = client.get(reverse("marketplace:checkout", args=[booking.public_id])).content.decode()
    assert reverse("financing:pay_usdai", args=[booking.public_id]) in checkout and "Pay 6.00 USDai" in checkout

    short = client.post(reverse("financing:pay_usdai", args=[booking.public_id]))
    assert short.status_code == 302 and short["Location"] == reverse("marketplace:checkout", args=[booking.public_id])
    assert "Your USDai balance is 0.00; it does not cover this." in client.get(short["Location"]).content.decode()
    booking.refresh_from_db()
    assert booking.status == Booking.Status.PENDING_PAYMENT

    _funded(renter, "10")
    paid = client.post(reverse("financing:pay_usdai", args=[booking.public_id]))

    assert paid.status_code == 302 and paid["Location"] == reverse("marketplace:my_bookings")
    booking.refresh_from_db()
    assert (booking.status, booking.amount_paid) == (Booking.Status.CONFIRMED, Decimal("6.00"))
    drain()
    assert chain.call("USDai", "balanceOf", Wallet.objects.get(user=renter).address) == 4 * 10**18


def test_paying_someone_elses_booking_with_usdai_is_404(chain, renter, owner, client_as):
    booking = _booking(renter, owner)
    other = make_renter()
    _funded(other, "10")
    response = client_as(other).post(reverse("financing:pay_usdai", args=[booking.public_id]))
    assert response.status_code == 404
    booking.refresh_from_db()
    assert booking.status == Booking.Status.PENDING_PAYMENT
    assert client_as(renter).get(reverse("financing:pay_usdai", args=[booking.public_id])).status_code == 405


# --- Proof of revenue ---------------------------------------------------------------------


def _settled(renter, owner, gross: str) -> Settlement:
    booking = _booking(renter, owner)
    return Settlement.objects.create(
        booking=booking,
        server=booking.server,
        interval_start=booking.start,
        interval_end=booking.start + timedelta(hours=1),
        gpu_seconds=3600,
        gross_amount=Decimal(gross),
    )


def test_a_settlement_not_yet_in_an_epoch_says_so_and_an_unknown_one_is_404(db, renter, owner, client_as):
    settlement = _settled(renter, owner, "2.00")
    client = client_as(None)
    pending = client.get(reverse("financing:settlement_proof", args=[settlement.pk]))
    assert pending.status_code == 200 and "it will be in the next epoch" in pending.content.decode()
    assert client.get(reverse("financing:settlement_proof", args=[settlement.pk + 1000])).status_code == 404
    assert client.get(f"/api/v1/proof/settlements/{settlement.pk + 1000}/").status_code == 404
    assert client.get(f"/api/v1/proof/settlements/{settlement.pk}/").json()["epoch"] is None


def test_proof_of_a_settled_booking_matches_the_root_anchored_on_chain(chain, renter, owner, client_as):
    first = _settled(renter, owner, "2.00")
    second = _settled(renter, owner, "3.50")
    third = _settled(renter, owner, "1.25")
    settlements_journal()
    epoch = epoch_close()
    drain()
    on_chain = "0x" + bytes(chain.call("RevenueAnchor", "roots", epoch.number)).hex()
    assert epoch.settlements == 3 and on_chain == epoch.root
    client = client_as(None)

    index = client.get(reverse("financing:proof"))
    html = index.content.decode()
    epoch.anchor_op.refresh_from_db()
    assert index.status_code == 200 and epoch.root in html and epoch.anchor_op.tx_hash in html and "Confirmed" in html
    lookup = client.get(reverse("financing:proof"), {"settlement": second.pk})
    assert lookup.status_code == 302 and lookup["Location"] == reverse("financing:settlement_proof", args=[second.pk])
    assert client.get(reverse("financing:proof"), {"settlement": "x"}).status_code == 400

    page = client.get(reverse("financing:settlement_proof", args=[second.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert "✓ matches: the proof leads to the root on chain" in html
    assert f'<dd class="hash" id="anchored-root">{on_chain}</dd>' in html
    assert f'<dd class="hash" id="computed-root">{on_chain}</dd>' in html
    assert 'id="proof-data"' in html and "js/proof.js" in html

    api = client.get(f"/api/v1/proof/settlements/{second.pk}/").json()
    assert (api["epoch"], api["index"], api["anchored_root"], api["matches"]) == (epoch.number, 1, on_chain, True)
    assert api["anchor_tx"] == epoch.anchor_op.tx_hash
    assert f'"settlement":{second.pk}' in api["data"] and '"gross":"3.500000"' in api["data"]
    leaf = merkle.leaf_hash(api["data"].encode())
    assert "0x" + leaf.hex() == api["leaf"]
    assert merkle.verify(leaf, [bytes.fromhex(p[2:]) for p in api["proof"]], bytes.fromhex(on_chain[2:]))
    for i, s in enumerate([first, second, third]):  # leaves in settlement order, each proof checked
        row = client.get(f"/api/v1/proof/settlements/{s.pk}/").json()
        assert (row["index"], row["root"], row["matches"]) == (i, on_chain, True)


def test_a_root_not_yet_on_chain_is_not_called_a_match(chain, renter, owner, client_as):
    settlement = _settled(renter, owner, "2.00")
    settlements_journal()
    epoch_close()  # not drained: the anchor waits in the outbox
    html = client_as(None).get(reverse("financing:settlement_proof", args=[settlement.pk])).content.decode()
    assert "not anchored yet" in html and "✓ matches" not in html


def test_the_algorithm_page_states_the_rules(client_as):
    html = client_as(None).get(reverse("financing:proof_algorithm")).content.decode()
    assert "SHA256(0x01 || min(a, b) || max(a, b))" in html


# --- CALIBER metadata ----------------------------------------------------------------------


def test_title_metadata_is_public_for_approved_collateral_only(db, owner, operator, client_as):
    collateral = approved_collateral(owner, operator, value="20000", purchase_price="30000", at=T0)
    client = client_as(None)

    for url in (f"/caliber/{collateral.pk}", f"/caliber/{collateral.pk}.json"):
        response = client.get(url)
        assert response.status_code == 200 and response["Content-Type"] == "application/json"
        body = response.json()
        assert body["record"] == json.loads(json.dumps(collateral_record(collateral)))
        assert body["record_hash"] == record_hash(collateral_record(collateral))
    type(collateral).objects.filter(pk=collateral.pk).update(approved_at=None)
    assert client.get(f"/caliber/{collateral.pk}").status_code == 404
    assert client.get(f"/caliber/{collateral.pk + 99}.json").status_code == 404


# --- Operators -------------------------------------------------------------------------------


def test_the_chain_page_is_for_staff(renter, lender, operator, client_as):
    assert client_as(renter).get(reverse("financing:operator_chain")).status_code == 403
    assert client_as(lender).get(reverse("financing:operator_chain")).status_code == 403
    assert client_as(None).get(reverse("financing:operator_chain")).status_code == 302
    assert client_as(renter).post(reverse("financing:operator_reconcile")).status_code == 403


def test_operator_reconciles_retries_a_failed_row_and_resolves_its_alert(chain, operator, renter, client_as):
    _funded(renter, "25")
    bad = chainop_enqueue(
        key="test:empty-root", contract="RevenueAnchor", function="anchor", args=[99, "0x" + "00" * 32]
    )
    drain()
    bad.refresh_from_db()
    assert bad.status == ChainOp.Status.FAILED
    client = client_as(operator)

    reconcile = client.post(reverse("financing:operator_reconcile"))
    assert reconcile.status_code == 302
    html = client.get(reverse("financing:operator_chain")).content.decode()
    assert "all " in html and "checks match" in html and "USDai total supply (wei)" in html
    assert "test:empty-root" in html and "Retry" in html
    alert = ChainAlert.objects.get(op=bad)
    assert alert.message in html

    retry = client.post(reverse("financing:operator_chainop_retry", args=[bad.pk]))

    assert retry.status_code == 302
    again = ChainOp.objects.get(key="test:empty-root:retry1")
    assert (again.status, again.contract, again.function, again.args) == (
        ChainOp.Status.PENDING,
        "RevenueAnchor",
        "anchor",
        ["99", "0x" + "00" * 32],
    )
    assert ChainOp.objects.filter(key__startswith="test:empty-root").count() == 2
    html = client.get(reverse("financing:operator_chain")).content.decode()
    assert "retried" in html and "Oldest open row" in html and "test:empty-root:retry1" in html
    assert client.post(reverse("financing:operator_chainop_retry", args=[again.pk])).status_code == 404  # not failed

    resolved = client.post(reverse("financing:operator_alert_resolve", args=[alert.pk]))
    assert resolved.status_code == 302
    alert.refresh_from_db()
    assert alert.resolved_at is not None


def test_operator_page_highlights_mismatches(chain, operator, renter, client_as):
    _funded(renter, "25")
    vault_deposit(user=renter, amount=Decimal("5"))  # booked, not yet sent: the vault's cash differs
    client = client_as(operator)
    client.post(reverse("financing:operator_reconcile"))
    html = client.get(reverse("financing:operator_chain")).content.decode()
    assert '<tr class="mismatch"><td>Vault idle USDai (wei)</td>' in html and "✗ mismatch" in html
    assert "still in flight" in html
    assert not ChainAlert.objects.filter(kind="reconcile").exists()  # in flight: not alerted


def test_checksum_vector_is_valid():
    assert to_checksum_address(OUTSIDE.lower()) == OUTSIDE
