"""What lenders and owners see of the vault and the loans: the share price and its history,
realised APR and APY, TVL, a lender's P&L, cancelling a queued redemption; the loan book's
impairments, write-offs, totals and weighted averages; first-loss capital, the operators'
write-off and claim forms; the owner's reserve and net revenue. Figures are computed here from
the chain and the ledger, not from the selectors under test."""

import csv
import io
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from financing.chain import node
from financing.chain.client import shares, shares_wei, wei_to_usd
from financing.models import (
    Appraisal,
    ChainOp,
    FirstLoss,
    InsuranceClaim,
    JournalEntry,
    Loan,
    Posting,
    Redemption,
    VaultDay,
    VaultDeposit,
    Wallet,
)
from financing.selectors.ledger import balances
from financing.selectors.vault import realised_apr
from financing.services.collateral import hardware_loss_declare
from financing.services.delinquency import loan_foreclose, loans_service
from financing.services.loans import loan_apply, loan_approve
from financing.services.outbox import chainop_enqueue
from financing.services.revenue import settlements_journal
from financing.services.vault import redemption_request, vault_daily, vault_deposit, vault_service
from financing.services.wallets import usdai_buy
from tests.api_errors import field_errors
from tests.chain_fixtures import drain
from tests.factories import make_lender
from tests.financing_fixtures import T0, approved_collateral, fund_vault, serve_daily_until, settle

pytestmark = pytest.mark.django_db
E18 = 10**18
ZERO = Decimal(0)
DUE1 = T0.replace(month=12)  # the first instalment of a loan approved at T0


def written() -> dict[str, int]:
    """What a refused request must not have written."""
    return {
        "ops": ChainOp.objects.count(),
        "entries": JournalEntry.objects.count(),
        "postings": Posting.objects.count(),
        "first_loss": FirstLoss.objects.count(),
        "redemptions": list(Redemption.objects.order_by("pk").values_list("status", "shares_left", "cancel_op")),
        "loans": list(Loan.objects.order_by("pk").values_list("status", "written_off_at")),
        "claims": list(InsuranceClaim.objects.order_by("pk").values_list("status", "amount_paid")),
    }


def dollars(amount: Decimal) -> str:
    """As the pages show money: two places, half up, thousands separated."""
    return f"${Decimal(amount).quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"


def six(value: Decimal) -> str:
    return f"{Decimal(value).quantize(Decimal('0.000001'), rounding=ROUND_HALF_UP)}"


def deposit(user, amount: str) -> None:
    usdai_buy(user=user, amount=Decimal(amount))
    vault_deposit(user=user, amount=Decimal(amount))
    drain()


def operator_call(chain, key: str, function: str, *args) -> ChainOp:
    """A call from the protocol's operator straight to the vault (what an epoch would queue)."""
    op = chainop_enqueue(key=key, contract="SUSDai", function=function, args=list(args))
    drain()
    op.refresh_from_db()
    assert op.status == ChainOp.Status.CONFIRMED, op.last_error
    return op


# --- The vault page: one share price, APR, APY, TVL, history -------------------------------------


def test_the_vault_page_shows_one_share_price_realised_apr_apy_tvl_and_the_price_history(
    chain, lender, client_as, api_as
):
    # given $100 in the vault, and a report of $5 accrued interest, a surprise gain that is locked
    # and half unlocked since
    deposit(lender, "100")
    report = operator_call(chain, "test:report", "report", 0, 5 * E18, 0, 2**64)
    half = settings.VAULT_UNLOCK_SECONDS // 2
    chain.advance_to(report.block_timestamp + half)
    supply = chain.call("SUSDai", "totalSupply")
    assert supply == 100 * E18
    locked = -(-5 * E18 * (settings.VAULT_UNLOCK_SECONDS - half) // settings.VAULT_UNLOCK_SECONDS)
    price_wei = E18 * (100 * E18 + 5 * E18 - locked + 1) // (supply + 1)
    assert chain.call("SUSDai", "convertToAssets", E18) == price_wei
    # and 30 recorded days: $40 of income a day over the last week, $20 before, on $100,000;
    # today's row (its income still coming in) is not a complete day
    today = timezone.localdate()
    for back in range(1, 31):
        price = Decimal("1.000100") * (4 - back) if back <= 3 else None
        VaultDay.objects.create(
            date=today - timedelta(days=back),
            nav=Decimal("100000"),
            income=Decimal("40") if back <= 7 else Decimal("20"),
            share_price=price,
        )
    VaultDay.objects.create(date=today, nav=Decimal("100000"), income=Decimal("999"), share_price=Decimal("1.0004"))
    apr_7 = Decimal(7 * 40) / 100000 * 365 / 7  # 14.60 %
    apr_30 = (Decimal(7 * 40 + 23 * 20) / 100000 * 365 / 30).quantize(Decimal("0.0001"))  # 9.00 %
    apy = (1 + float(apr_30) / 365) ** 365 - 1  # 9.42 %

    html = client_as(lender).get(reverse("financing:vault")).content.decode()

    assert f'<div class="stat" id="share-price">{six(shares(price_wei))}</div>' in html
    assert "Redeem price" not in html and "Deposit price" not in html
    assert "You deposit and redeem at this one price" in html and "never first come, first served" in html
    assert f'<div class="stat" id="apr">{apr_7 * 100:.2f}%</div>' in html
    assert f'<span id="apr-30">{apr_30 * 100:.2f}%</span>' in html
    assert f'<div class="stat" id="apy">{apy * 100:.2f}%</div>' in html
    assert '<div class="stat" id="tvl">$100.00</div>' in html  # the books: the vault's cash
    assert '<div class="stat" id="accrued">$5.00</div>' in html
    assert f'<div class="stat" id="locked-profit">{dollars(wei_to_usd(locked))}</div>' in html
    for back, label in ((3, "1.000100"), (2, "2.000200"), (1, "3.000300"), (0, "1.000400")):
        assert f"<title>{today - timedelta(days=back):%Y-%m-%d}: {label}</title>" in html
    assert html.count('<circle cx="') == 4  # the days with a price, no more

    api = api_as(lender)
    summary = api.get("/api/v1/vault/").json()["summary"]
    assert summary["share_price"] == f"{shares(price_wei):.18f}"
    assert summary["redeem_price"] == summary["deposit_price"] == str(wei_to_usd(price_wei))  # rounded down
    assert (summary["apr_7"], summary["apr_30"], summary["apy_30"]) == ("0.1460", "0.0900", f"{apy:.4f}")
    assert (summary["accrued"], summary["locked_profit"], summary["nav"]) == (
        "5.000000",
        str(wei_to_usd(locked)),
        "100.000000",
    )
    history = api.get("/api/v1/vault/history/").json()
    assert len(history) == 31 and history[0]["date"] == f"{today - timedelta(days=30)}"
    assert history[-1] == {
        "date": f"{today}",
        "nav": "100000.000000",
        "income": "999.000000",
        "share_price": "1.000400000000000000",
    }


def test_the_daily_run_records_the_share_price_after_its_books_and_a_chain_error_leaves_it_empty(
    chain, lender, client_as, settings
):
    deposit(lender, "100")
    today = timezone.localdate()

    # when the chain cannot be reached: the day is recorded all the same, its price left empty
    settings.CHAIN_RPC_URL = "http://127.0.0.1:9"
    node.chain_reset()
    try:
        vault_daily(today=today)
        day = VaultDay.objects.get(date=today)
        assert (day.nav, day.share_price) == (Decimal("100.000000"), None)
        page = client_as(lender).get(reverse("financing:vault")).content.decode()
        assert 'id="chain-error"' in page and '<div class="stat" id="share-price">—</div>' in page
        assert '<dd id="pnl-total">— ' in page
    finally:
        settings.CHAIN_RPC_URL = ""
        node.chain_reset()

    # when it runs again with the chain back: today's price is the chain's
    vault_daily(today=today)
    price = shares(node.get_chain().call("SUSDai", "convertToAssets", E18))
    assert VaultDay.objects.get(date=today).share_price == price == Decimal("1")
    # a run for an earlier date (a backfill) does not pass today's price off as that day's
    vault_daily(today=today - timedelta(days=1))
    assert VaultDay.objects.get(date=today - timedelta(days=1)).share_price is None


# --- Realised APR by economic date --------------------------------------------------------------


def test_realised_apr_counts_each_settlements_interest_on_the_day_its_usage_ended(chain, loan, renter):
    # given the daily run on two days before any rent came in
    d3 = timezone.localdate()
    d1, d2 = d3 - timedelta(days=2), d3 - timedelta(days=1)

    def run(d):  # the daily run, five past midnight
        return vault_daily(today=d, now=datetime.combine(d, time(0, 5), tzinfo=UTC))["tbill_interest"]

    tbill = {d: run(d) for d in (d1, d2)}  # d2's run pays the T-bills' day since d1's run
    assert VaultDay.objects.get(date=d1).income == tbill[d2] > 0

    # when rent for usage that ended on each of those days is journaled at once, today
    first = settle(loan, renter, "4000.00", datetime.combine(d1, time(12), tzinfo=UTC))
    second = settle(loan, renter, "2000.00", datetime.combine(d2, time(12), tzinfo=UTC))
    settlements_journal()
    tbill[d3] = run(d3)

    # then each day has its own settlement's interest (and the T-bill interest earned that day),
    # and today, on whose date all of it was booked, has earned nothing yet
    def to_vault(settlement) -> Decimal:
        return Posting.objects.get(entry__settlement=settlement, line="to_vault_interest").amount

    days = {d.date: d for d in VaultDay.objects.all()}
    assert days[d1].income == to_vault(first) + tbill[d2]
    assert days[d2].income == to_vault(second) + tbill[d3]
    assert days[d3].income == 0
    assert to_vault(first) > to_vault(second) > 0
    # and realised APR is that income over the average NAV of the complete days, annualised
    expected = (days[d1].income + days[d2].income) / ((days[d1].nav + days[d2].nav) / 2) * 365 / 2
    assert realised_apr(days=7, today=d3) == expected.quantize(Decimal("0.0001"))
    assert realised_apr(days=1, today=d3) == (days[d2].income / days[d2].nav * 365).quantize(Decimal("0.0001"))


def test_the_demo_seed_shows_the_income_it_earned_each_day():
    call_command("seed_demo", stdout=io.StringIO())

    # the daily job ran for each simulated day since the loans, so each day has its own income:
    # the interest of the settlements whose usage ended that day, and that day's T-bill interest
    days = list(VaultDay.objects.order_by("date"))
    today = timezone.localdate()
    assert days[-1].date == today and len(days) == 21
    assert [d.date for d in days] == [today - timedelta(days=20 - i) for i in range(21)]
    interest: dict = {}
    for end, amount in Posting.objects.filter(
        account__code="vault_cash", line="to_vault_interest", entry__settlement__isnull=False
    ).values_list("entry__settlement__interval_end", "amount"):
        interest[end.date()] = interest.get(end.date(), ZERO) + amount
    tbill: dict = {}
    for key, amount in Posting.objects.filter(account__code="vault_cash", line="tbill_interest").values_list(
        "entry__key", "amount"
    ):
        start, end = (datetime.fromisoformat(m) for m in key.removeprefix("tbill:interest:").split("/"))
        day = timezone.localdate(start + (end - start) / 2)  # the accrual's midpoint
        tbill[day] = tbill.get(day, ZERO) + amount
    for day in days:
        assert day.income == interest.get(day.date, ZERO) + tbill.get(day.date, ZERO), day.date
    assert sum(interest.values()) > 0
    # realised APR: the window's income over its average NAV, annualised: an ordinary rate, not
    # weeks of income booked on one day
    window = [d for d in days if d.date < today]
    expected = sum(d.income for d in window) / (sum(d.nav for d in window) / len(window)) * 365 / len(window)
    apr = realised_apr(days=30)
    assert apr == expected.quantize(Decimal("0.0001"))
    assert Decimal("0") < apr < Decimal("0.15")


# --- A lender's P&L --------------------------------------------------------------------------


def test_a_lenders_pnl_is_value_plus_redeemed_less_deposited(chain, lender, client_as, api_as, settings):
    settings.VAULT_MIN_REDEMPTION = Decimal("10")
    # given $100 deposited, and $10 of surprise profit reported and fully unlocked
    deposit(lender, "100")
    report = operator_call(chain, "test:profit", "report", 10 * E18, 0, 0, 2**64)
    chain.advance_to(report.block_timestamp + settings.VAULT_UNLOCK_SECONDS + 1)
    # when 30 shares are redeemed and paid, 20 more wait in the queue, and $10 more is on its way in
    redemption_request(user=lender, shares_amount=Decimal("30"))
    drain()
    vault_service()
    drain()
    paid = Redemption.objects.get(shares=30)
    assert paid.status == Redemption.Status.PAID
    redemption_request(user=lender, shares_amount=Decimal("20"))
    drain()
    usdai_buy(user=lender, amount=Decimal("10"))
    drain()
    vault_deposit(user=lender, amount=Decimal("10"))  # not sent yet: no shares minted

    # then the value is the wallet's shares and the queued ones at the share price, plus the
    # deposit in flight; P&L = value + redeemed − deposited: about the $10 of profit
    wallet = Wallet.objects.get(user=lender).address
    in_wallet = wei_to_usd(chain.call("SUSDai", "convertToAssets", chain.call("SUSDai", "balanceOf", wallet)))
    queued = wei_to_usd(chain.call("SUSDai", "convertToAssets", shares_wei(Decimal("20"))))
    value = in_wallet + queued + Decimal("10")
    pnl = value + paid.paid - Decimal("110")
    assert paid.paid == wei_to_usd(30 * E18 * (110 * E18 + 1) // (100 * E18 + 1))
    assert abs(pnl - Decimal("10")) < Decimal("0.00001")

    html = client_as(lender).get(reverse("financing:vault")).content.decode()
    assert '<dd id="pnl-deposited">$110.00</dd>' in html
    assert f'<dd id="pnl-redeemed">{dollars(paid.paid)}</dd>' in html
    assert f'<dd id="pnl-value">{dollars(value)} ' in html and f"in the queue ({dollars(queued)})" in html
    assert "$10.00 of deposits on their way to the chain" in html
    assert f'<dd id="pnl-total">+{dollars(pnl)} ' in html
    body = api_as(lender).get("/api/v1/vault/").json()["pnl"]
    assert body == {
        "deposited": "110.000000",
        "redeemed": f"{paid.paid:.6f}",
        "sending": "10.000000",
        "wallet_value": f"{in_wallet:.6f}",
        "queued_value": f"{queued:.6f}",
        "value": f"{value:.6f}",
        "pnl": f"{pnl:.6f}",
        "error": "",
    }


# --- Cancelling a queued redemption ---------------------------------------------------------


def test_a_lender_cancels_queued_redemptions_on_the_page_and_by_api_and_gets_the_shares_back(
    chain, lender, client_as, api_as, settings
):
    settings.VAULT_MIN_REDEMPTION = Decimal("10")
    deposit(lender, "100")
    wallet = Wallet.objects.get(user=lender).address
    held = chain.call("SUSDai", "balanceOf", wallet)
    client = client_as(lender)
    assert client.post(reverse("financing:vault"), {"action": "redeem", "redeem-shares": "20"}).status_code == 302
    assert client.post(reverse("financing:vault"), {"action": "redeem", "redeem-shares": "15"}).status_code == 302
    drain()
    first, second = Redemption.objects.order_by("pk")
    assert (first.status, second.status) == (Redemption.Status.QUEUED, Redemption.Status.QUEUED)
    assert chain.call("SUSDai", "balanceOf", wallet) == held - 35 * E18  # escrowed in the vault
    html = client.get(reverse("financing:vault")).content.decode()
    assert f'id="cancel-{first.pk}"' in html and f'id="cancel-{second.pk}"' in html

    # when the lender cancels the first on the page
    response = client.post(reverse("financing:vault"), {"action": "cancel", "cancel-redemption": first.pk})

    # then it is being cancelled, the chain call is queued, and once confirmed its shares are back
    assert response.status_code == 302
    first.refresh_from_db()
    assert first.status == Redemption.Status.CANCELLING
    assert (first.cancel_op.function, first.cancel_op.args) == ("cancel_redeem", [str(first.request_id)])
    drain()
    first.refresh_from_db()
    assert (first.status, first.shares_left) == (Redemption.Status.CANCELLED, Decimal(0))
    assert chain.call("SUSDai", "balanceOf", wallet) == held - 15 * E18
    html = client.get(reverse("financing:vault")).content.decode()
    assert f'id="cancel-{first.pk}"' not in html and "Cancelled" in html

    # when the lender cancels the second through the API
    body = api_as(lender).post(f"/api/v1/vault/redemptions/{second.pk}/cancel/").json()
    assert (body["id"], body["status"], body["position"]) == (second.pk, "cancelling", None)
    drain()
    second.refresh_from_db()
    assert second.status == Redemption.Status.CANCELLED
    assert chain.call("SUSDai", "balanceOf", wallet) == held
    assert chain.call("SUSDai", "queued_shares") == 0


def test_cancelling_another_lenders_or_an_unqueued_redemption_is_refused_and_writes_nothing(
    chain, lender, client_as, api_as, settings
):
    settings.VAULT_MIN_REDEMPTION = Decimal("10")
    other = make_lender()
    deposit(other, "50")
    deposit(lender, "100")
    theirs = redemption_request(user=other, shares_amount=Decimal("10"))
    paid = redemption_request(user=lender, shares_amount=Decimal("10"))
    drain()
    vault_service()
    drain()
    paid.refresh_from_db()
    theirs.refresh_from_db()
    assert (paid.status, theirs.status) == (Redemption.Status.PAID, Redemption.Status.PAID)
    queued = redemption_request(user=other, shares_amount=Decimal("10"))
    drain()
    sending = redemption_request(user=lender, shares_amount=Decimal("10"))  # not on chain yet
    client, api = client_as(lender), api_as(lender)
    before = written()

    def cancel_page(pk):
        return client.post(reverse("financing:vault"), {"action": "cancel", "cancel-redemption": pk})

    # another lender's redemption: not found (its existence is not given away), on the page and by API
    assert cancel_page(queued.pk).status_code == 404
    assert api.post(f"/api/v1/vault/redemptions/{queued.pk}/cancel/").status_code == 404
    # the lender's own, still being sent, or already paid: 400 with the reason
    page = cancel_page(sending.pk)
    assert page.status_code == 400
    assert "This request is still being sent to the chain; try again shortly." in page.content.decode()
    response = api.post(f"/api/v1/vault/redemptions/{sending.pk}/cancel/")
    assert response.status_code == 400
    assert field_errors(response) == {
        "redemption": ["This request is still being sent to the chain; try again shortly."]
    }
    page = cancel_page(paid.pk)
    assert page.status_code == 400 and "This redemption is paid." in page.content.decode()
    response = api.post(f"/api/v1/vault/redemptions/{paid.pk}/cancel/")
    assert response.status_code == 400 and field_errors(response) == {"redemption": ["This redemption is paid."]}
    # not a redemption id at all
    assert cancel_page("x").status_code == 400
    assert written() == before


# --- The loan book ---------------------------------------------------------------------------


def test_the_loan_book_totals_and_its_averages_weighted_by_outstanding_principal(
    owner, operator, lender, client_as, settings
):
    # given two loans on $20,000 of hardware each: $12,000 at 15 % (LTV 60 %), $6,000 at 12 % (30 %)
    fund_vault()
    fund_vault()
    company = owner.owner_membership.company
    loans = []
    for amount, apr, policy in (("12000", "0.15", "P-1"), ("6000", "0.12", "P-2")):
        settings.LOAN_APR = Decimal(apr)
        record = approved_collateral(owner, operator, value="20000", purchase_price="30000", at=T0, policy=policy)
        applied = loan_apply(owner=company, collateral=record, amount=Decimal(amount), tenor_months=12, now=T0)
        loans.append(loan_approve(loan=applied, operator=operator, now=T0))
    weighted_apr = (12000 * Decimal("0.15") + 6000 * Decimal("0.12")) / 18000
    weighted_ltv = (12000 * Decimal("0.6") + 6000 * Decimal("0.3")) / 18000
    assert (weighted_apr, weighted_ltv) == (Decimal("0.14"), Decimal("0.5"))

    html = client_as(lender).get(reverse("financing:loan_book")).content.decode()

    assert '<div class="stat" id="total-principal">$18,000.00</div>' in html
    assert '<div class="stat" id="total-allowance">$0.00</div>' in html
    assert '<div class="stat" id="total-net">$18,000.00</div>' in html
    assert '<span id="weighted-apr">14.00%</span>' in html and '<span id="weighted-ltv">50.00%</span>' in html
    assert '<td class="num">15%</td>' in html and '<td class="num">12%</td>' in html
    tape = list(csv.DictReader(io.StringIO(client_as(lender).get(reverse("financing:loan_tape")).content.decode())))
    assert [(row["outstanding"], row["allowance"], row["written_off"]) for row in tape] == [
        ("6000.000000", "0.000000", "0.000000"),
        ("12000.000000", "0.000000", "0.000000"),
    ]


def test_an_impaired_loan_then_its_write_off_by_an_operator_on_the_book_and_the_loan_page(
    loan, lender, operator, client_as
):
    lid = loan.pk
    latest = Appraisal.objects.filter(collateral_id=loan.collateral_id).latest("as_of")
    latest.pk, latest.as_of, latest.value = None, T0 + timedelta(hours=1), Decimal("5000")
    latest.save()  # the hardware's value falls: it would recover $3,500
    book_url, loan_url = reverse("financing:loan_book"), reverse("financing:lender_loan", args=[loan.public_id])

    # given the loan 30 days past due: a quarter of its expected loss is provided for
    at30 = serve_daily_until(loan, dpd=30)
    books = balances()
    allowance, principal = -books[f"allowance:{lid}"], books[f"principal:{lid}"]
    assert allowance > 0
    html = client_as(lender).get(book_url).content.decode()
    assert f'<td class="num allowance">{dollars(allowance)}</td>' in html
    assert f'<div class="stat" id="total-allowance">{dollars(allowance)}</div>' in html
    assert f'<div class="stat" id="total-net">{dollars(principal - allowance)}</div>' in html
    page = client_as(lender).get(loan_url).content.decode()
    assert f'<dd id="loan-allowance">{dollars(allowance)}</dd>' in page
    assert f'<dd id="loan-net-value">{dollars(principal - allowance)}</dd>' in page

    # when it defaults and is foreclosed: operators see the write-off form, lenders do not
    defaulted_at = serve_daily_until(loan, status=Loan.Status.DEFAULTED, start=at30)
    loan_foreclose(loan=loan, operator=operator, now=defaulted_at + timedelta(days=1))
    assert 'id="write-off-form"' not in client_as(lender).get(loan_url).content.decode()
    staff = client_as(operator)  # staff, not a lender
    assert 'id="write-off-form"' in staff.get(loan_url).content.decode()

    # a lender cannot write it off; an operator's bad amount is a form error; neither writes anything
    before = written()
    refused = client_as(lender).post(loan_url, {"action": "write_off", "wo-sale_proceeds": "3000"})
    assert refused.status_code == 403
    bad = staff.post(loan_url, {"action": "write_off", "wo-sale_proceeds": "-1"})
    assert bad.status_code == 400
    assert "Enter the sale proceeds in dollars and cents (zero or more)." in bad.content.decode()
    assert written() == before

    # when the operator writes it off with $3,000 of sale proceeds
    left = balances()[f"principal:{lid}"]
    assert staff.post(loan_url, {"action": "write_off", "wo-sale_proceeds": "3000.00"}).status_code == 302

    # then the book shows it written off: what the sale did not cover is charged off
    loan.refresh_from_db()
    assert loan.status == Loan.Status.WRITTEN_OFF
    charged = left - Decimal("3000")
    html = client_as(lender).get(book_url).content.decode()
    assert "Written off" in html and f'<td class="num written-off">{dollars(charged)}</td>' in html
    assert f'id="total-written-off">{dollars(charged)}</span>' in html
    assert '<div class="stat" id="total-principal">$0.00</div>' in html
    page = client_as(lender).get(loan_url).content.decode()
    assert f'<dd id="loan-written-off">{dollars(charged)}</dd>' in page and '<dd id="loan-allowance">$0.00</dd>' in page
    tape = next(csv.DictReader(io.StringIO(client_as(lender).get(reverse("financing:loan_tape")).content.decode())))
    assert (tape["status"], tape["allowance"], tape["written_off"]) == ("written_off", "0.000000", f"{charged:.6f}")


def test_an_operator_settles_an_insurance_claim_from_the_loan_page(loan, lender, operator, owner, client_as):
    claim = hardware_loss_declare(
        collateral=loan.collateral, operator=operator, description="Rack fire", now=T0 + timedelta(days=2)
    )
    assert claim.amount_claimed == Decimal("20000.00")  # the appraisal, below the coverage
    url = reverse("financing:lender_loan", args=[loan.public_id])
    assert f'id="settle-claim-{claim.pk}"' in client_as(operator).get(url).content.decode()
    assert f'id="settle-claim-{claim.pk}"' not in client_as(lender).get(url).content.decode()
    other = approved_collateral(owner, operator, value="1000", purchase_price="2000", at=T0, policy="P-other")
    elsewhere = hardware_loss_declare(collateral=other, operator=operator, description="Flood", now=T0)
    before = written()

    refused = client_as(lender).post(
        url, {"action": "settle_claim", "claim-claim": claim.pk, "claim-amount_paid": "5000.00"}
    )
    assert refused.status_code == 403
    staff = client_as(operator)
    not_this_loan = staff.post(
        url, {"action": "settle_claim", "claim-claim": elsewhere.pk, "claim-amount_paid": "5000.00"}
    )
    assert not_this_loan.status_code == 404
    bad = staff.post(url, {"action": "settle_claim", "claim-claim": claim.pk, "claim-amount_paid": "lots"})
    assert bad.status_code == 400 and "Enter a number." in bad.content.decode()
    assert written() == before

    principal = balances()[f"principal:{loan.pk}"]
    done = staff.post(url, {"action": "settle_claim", "claim-claim": claim.pk, "claim-amount_paid": "5000.00"})

    assert done.status_code == 302
    claim.refresh_from_db()
    assert (claim.status, claim.amount_paid) == (InsuranceClaim.Status.PAID, Decimal("5000.00"))
    assert balances()[f"principal:{loan.pk}"] == principal - Decimal("5000")  # it paid the loan down
    page = staff.get(url).content.decode()
    assert f'id="settle-claim-{claim.pk}"' not in page and "Paid" in page


# --- First-loss capital ----------------------------------------------------------------------


def test_a_lender_and_the_owner_post_first_loss_capital_from_their_loan_pages(loan, lender, owner, client_as):
    usdai_buy(user=lender, amount=Decimal("1500.00"))
    url = reverse("financing:lender_loan", args=[loan.public_id])
    client = client_as(lender)
    assert 'id="first-loss-form"' in client.get(url).content.decode()
    before = written()

    too_much = client.post(url, {"action": "first_loss", "fl-amount": "1600"})
    assert too_much.status_code == 400
    assert "You hold 1,500.00 USDai; post at most that." in too_much.content.decode()
    fraction = client.post(url, {"action": "first_loss", "fl-amount": "10.125"})
    assert fraction.status_code == 400 and "Ensure that there are no more than 2 decimal places." in (
        fraction.content.decode()
    )
    zero = client.post(url, {"action": "first_loss", "fl-amount": "0"})
    assert zero.status_code == 400 and "Enter a positive amount (at most 6 decimals)." in zero.content.decode()
    assert written() == before

    posted = client.post(url, {"action": "first_loss", "fl-amount": "1200.00"})

    assert posted.status_code == 302
    position = FirstLoss.objects.get()
    # 20 % a year on $1,200 as a share of the loan's interest ($12,000 × 15 %), rounded down
    share = (Decimal("1200") * Decimal("0.20") / (Decimal("12000") * Decimal("0.15"))).quantize(
        Decimal("0.0001"), rounding="ROUND_DOWN"
    )
    assert (position.provider, position.amount, position.premium_share) == (lender, Decimal("1200.00"), share)
    assert balances()[f"first_loss:{loan.pk}"] == Decimal("-1200.00")
    html = client.get(url).content.decode()
    assert f"curator #{lender.pk} (you)" in html and f"{share} of its interest" in html
    assert '<dd id="first-loss-posted">$1,200.00</dd>' in html
    assert '<dd id="first-loss-standing">$1,200.00</dd>' in html

    # the owner posts from the owner's loan page; lenders see it as the owner's
    usdai_buy(user=owner, amount=Decimal("500.00"))
    owner_url = reverse("financing:owner_loan", args=[loan.public_id])
    assert client_as(owner).post(owner_url, {"action": "first_loss", "fl-amount": "500"}).status_code == 302
    html = client.get(url).content.decode()
    assert f"the owner ({loan.owner.name})" in html and '<dd id="first-loss-standing">$1,700.00</dd>' in html


# --- The owner's loan page: the reserve and net revenue --------------------------------------


def test_the_owner_sees_the_reserve_held_drawn_refilled_released_and_net_revenue(loan, renter, owner, client_as):
    lid, company = loan.pk, loan.owner
    url = reverse("financing:owner_loan", args=[loan.public_id])
    html = client_as(owner).get(url).content.decode()
    assert '<div class="stat" id="reserve-held">$3,249.30</div>' in html
    assert '<dd id="reserve-funded">$3,249.30</dd>' in html and "not yet: it is released" in html

    # when the first instalment goes unpaid past the grace period, the reserve pays it
    loans_service(now=DUE1 + timedelta(days=settings.LOAN_GRACE_DAYS + 1))
    drawn = Posting.objects.filter(account__code=f"reserve:{lid}", line="reserve_draw").aggregate(s=Sum("amount"))["s"]
    assert drawn > 0
    # then revenue refills it and repays the loan
    gross = Decimal(0)
    for day, amount in [(40, "30000.00")] + [(30 * m + 11, "5000.00") for m in range(2, 14)]:
        settle(loan, renter, amount, T0 + timedelta(days=day))
        settlements_journal()
        gross += Decimal(amount)
    refilled = -Posting.objects.filter(account__code=f"reserve:{lid}", line="reserve").aggregate(s=Sum("amount"))["s"]
    held = -balances()[f"reserve:{lid}"]
    assert refilled > 0 and held == Decimal("3249.30") - drawn + refilled
    repaid_at = T0 + timedelta(days=430)
    loans_service(now=repaid_at)
    loan.refresh_from_db()
    assert loan.status == Loan.Status.REPAID and loan.reserve_released_at == repaid_at
    owed_to_owner = -balances()[f"owner_payable:{company.pk}"]  # the waterfall's owner lines and the release

    html = client_as(owner).get(url).content.decode()

    assert '<div class="stat" id="reserve-held">$0.00</div>' in html
    assert f'<dd id="reserve-drawn">{dollars(drawn)}</dd>' in html
    assert f'<dd id="reserve-topped-up">{dollars(refilled)}</dd>' in html
    assert f'<dd id="reserve-released">{dollars(held)} on {repaid_at:%Y-%m-%d}</dd>' in html
    to_owner = owed_to_owner - held
    assert f'<div class="stat" id="owner-net">{dollars(to_owner)}</div>' in html
    assert f'<span id="owner-gross">{dollars(gross)}</span>' in html
    assert f'<span id="owner-percent">{(to_owner / gross * 100).quantize(Decimal("0.01"))}%</span>' in html


def test_loan_pages_are_for_their_people(loan, renter, lender, operator, client_as):
    from tests.factories import make_owner

    lender_url = reverse("financing:lender_loan", args=[loan.public_id])
    owner_url = reverse("financing:owner_loan", args=[loan.public_id])
    assert client_as(renter).get(lender_url).status_code == 403
    assert client_as(operator).get(lender_url).status_code == 200
    assert client_as(operator).get(reverse("financing:loan_book")).status_code == 200
    assert client_as(make_owner()).get(owner_url).status_code == 404
    assert client_as(make_owner()).post(owner_url, {"action": "first_loss", "fl-amount": "5"}).status_code == 404
    assert client_as(lender).post(lender_url, {"action": "settle_claim"}).status_code == 403
    assert VaultDeposit.objects.count() == 1 and not FirstLoss.objects.exists()
