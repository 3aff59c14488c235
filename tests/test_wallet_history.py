"""The wallet page's history: every kind of money movement, each pending until the
gateway or the chain confirms it. Against the in-process EVM and the offline gateway."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

from django.urls import reverse

from financing.models import ChainOp, Payout, Redemption, VaultDeposit
from financing.selectors.wallet_history import CONFIRMED, FAILED, PENDING, wallet_history
from financing.services.payouts import payouts_confirm
from financing.services.vault import redemption_request, vault_deposit
from financing.services.wallets import booking_pay_usdai, usdai_buy, usdai_withdraw
from marketplace.models import Booking, Payment
from marketplace.services import bookings
from tests.chain_fixtures import drain
from tests.factories import make_lender, make_listing, make_owner, make_renter, next_hour
from tests.test_payouts import WALLET, earning_company, run_week

OUTSIDE = "0x52908400098527886E0F7030069857D2E4169EE7"


def _states(user) -> list[tuple[str, str, Decimal, str]]:
    return [(e.kind, e.state, e.amount, e.unit) for e in wallet_history(user=user)]


def test_a_deposit_is_pending_until_its_receipt_and_never_shown_as_deposited_before(chain, client_as):
    lender = make_lender()
    usdai_buy(user=lender, amount=Decimal("500.00"))
    drain()
    client = client_as(lender)

    response = client.post(reverse("financing:vault"), {"action": "deposit", "deposit-amount": "200"}, follow=True)

    page = response.content.decode()
    assert "pending until the chain confirms it" in page and "Deposited 200" not in page
    deposit = VaultDeposit.objects.get()
    assert deposit.op.status == ChainOp.Status.PENDING
    assert _states(lender)[0] == ("deposit", PENDING, Decimal("-200"), "USDai")
    html = client.get(reverse("financing:wallet")).content.decode()
    assert 'class="history-deposit" data-state="pending"' in html

    drain()

    entry = wallet_history(user=lender)[0]
    deposit.refresh_from_db()
    assert (entry.kind, entry.state) == ("deposit", CONFIRMED)
    assert entry.detail == f"deposited for {deposit.shares:.6f} sUSDai" and entry.reference == deposit.op.tx_hash
    assert 'class="history-deposit" data-state="confirmed"' in client.get(reverse("financing:wallet")).content.decode()


def test_purchases_sends_and_redemptions_follow_their_chain_transactions(chain):
    lender = make_lender()
    usdai_buy(user=lender, amount=Decimal("300.00"))
    assert _states(lender) == [("purchase", PENDING, Decimal("300.00"), "USDai")]  # paid, the mint not yet sent
    drain()
    assert _states(lender) == [("purchase", CONFIRMED, Decimal("300.00"), "USDai")]

    usdai_withdraw(user=lender, address=OUTSIDE, amount=Decimal("25"))
    vault_deposit(user=lender, amount=Decimal("100"))
    drain()
    redemption_request(user=lender, shares_amount=Decimal("10"))

    kinds = {e.kind: e for e in wallet_history(user=lender)}
    assert (kinds["send"].state, kinds["send"].amount, kinds["send"].description) == (
        CONFIRMED,
        Decimal("-25"),
        f"Sent USDai to {OUTSIDE}",
    )
    assert (kinds["redemption"].state, kinds["redemption"].amount, kinds["redemption"].unit) == (
        PENDING,
        Decimal("-10"),
        "sUSDai",
    )
    drain()
    assert Redemption.objects.get().status == Redemption.Status.QUEUED
    assert wallet_history(user=lender)[0].detail == "queued; paid first in, first out"


def test_a_failed_chain_transaction_shows_failed_not_done(chain):
    lender = make_lender()
    usdai_buy(user=lender, amount=Decimal("50.00"))
    drain()
    op = usdai_withdraw(user=lender, address=OUTSIDE, amount=Decimal("5"))
    ChainOp.objects.filter(pk=op.pk).update(status=ChainOp.Status.FAILED)

    send = next(e for e in wallet_history(user=lender) if e.kind == "send")

    assert send.state == FAILED and "failed" in send.detail


def _booking(renter, listing, *, hours_ahead: int, hours: int = 1) -> Booking:
    start = next_hour(hours_ahead)
    return bookings.booking_create(
        renter=renter, listing=listing, gpu_count=1, start=start, end=start + timedelta(hours=hours)
    )


def test_card_payments_refunds_and_usdai_payments_of_a_renter(chain):
    renter = make_renter()
    listing = make_listing(make_owner(), gpu_count=2, price="2.50")
    booking = _booking(renter, listing, hours_ahead=2, hours=2)
    bookings.booking_pay(booking=booking, renter=renter)
    bookings.booking_cancel(booking=Booking.objects.get(pk=booking.pk), renter=renter)

    rows = {e.kind: e for e in wallet_history(user=renter)}
    payment = Payment.objects.get(booking=booking)
    assert (rows["payment"].state, rows["payment"].amount, rows["payment"].unit) == (CONFIRMED, -payment.amount, "USD")
    assert rows["payment"].detail == "paid by offline (test payment)"
    assert rows["refund"].state == CONFIRMED and rows["refund"].amount == payment.amount  # cancelled before it began

    usdai_buy(user=renter, amount=Decimal("20.00"))
    drain()
    booking_pay_usdai(booking=_booking(renter, listing, hours_ahead=6), renter=renter)
    usdai = next(e for e in wallet_history(user=renter) if e.kind == "payment" and e.unit == "USDai")
    assert usdai.state == PENDING and "leaves your wallet on chain" in usdai.detail
    drain()
    usdai = next(e for e in wallet_history(user=renter) if e.kind == "payment" and e.unit == "USDai")
    assert usdai.state == CONFIRMED and usdai.amount == -Decimal("2.50")


def test_a_pending_card_payment_is_pending_and_another_users_history_is_not_shown(chain, client_as):
    renter, other = make_renter(), make_renter()
    booking = _booking(renter, make_listing(make_owner(), gpu_count=1, price="3.00"), hours_ahead=2)
    Payment.objects.create(booking=booking, gateway="stripe", idempotency_key="k-1", amount=booking.amount)

    assert _states(renter) == [("payment", PENDING, -booking.amount, "USD")]
    assert wallet_history(user=other) == []
    html = client_as(other).get(reverse("financing:wallet")).content.decode()
    assert "Nothing yet." in html and str(booking.public_id)[:8] not in html


def test_the_history_downloads_as_csv(chain, client_as):
    lender = make_lender()
    usdai_buy(user=lender, amount=Decimal("40.00"))

    response = client_as(lender).get(reverse("financing:wallet_history_csv"))

    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[0][:6] == ["when_utc", "kind", "description", "amount", "unit", "state"]
    assert [r[1:6] for r in rows[1:]] == [
        ["purchase", "Bought USDai by offline (test payment)", "40.00", "USDai", "pending"]
    ]


def test_an_owner_sees_the_company_payout_pending_until_its_mint_is_confirmed(chain, client_as):
    company, _ = earning_company(make_renter(), "100.00", payout_wallet_address=WALLET)
    owner = company.memberships.get().user
    run_week()

    entry = next(e for e in wallet_history(user=owner) if e.kind == "payout")
    payout = Payout.objects.get()
    assert (entry.state, entry.amount, entry.unit) == (PENDING, payout.amount, "USDai")
    assert entry.amount == Decimal("95.00") and "waiting for the chain" in entry.detail
    assert wallet_history(user=make_owner()) == []  # another company's member sees none of it

    drain()
    payouts_confirm()

    entry = next(e for e in wallet_history(user=owner) if e.kind == "payout")
    assert entry.state == CONFIRMED and entry.reference == Payout.objects.get().op.tx_hash
    assert (
        'class="history-payout" data-state="confirmed"'
        in client_as(owner).get(reverse("financing:wallet")).content.decode()
    )
