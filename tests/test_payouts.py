"""Owner payouts: paid once, on two rails, withheld, carried, refused, crash-safe and race-safe.

The invariant every paying test ends on, with the ledger as the judge: each paid payout is
one ``payout:<id>`` entry and one rail row (an outbox mint or a SEPA file line), nothing
else moved, and the money reconciler's payout check is clean.
"""

from contextlib import contextmanager
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sepaxml
import xmlschema
from django.db import connection
from django.utils import timezone

from accounts.models import OwnerCompany
from core import money
from financing.chain.client import usd_to_wei
from financing.models import ChainOp, JournalEntry, LedgerAccount, Payout, PayoutRun, Posting, SepaFile, Wallet
from financing.selectors.ledger import account_balance
from financing.selectors.payouts import payout_statement
from financing.services import payouts
from financing.services.delinquency import loans_service
from financing.services.money_reconcile import PAYOUTS, money_reconcile
from financing.services.reconcile import chain_reconcile
from financing.services.revenue import ledger_pull
from marketplace.models import Settlement
from marketplace.services import bookings
from tests.chain_fixtures import drain
from tests.concurrency import race
from tests.factories import make_listing, make_operator, make_owner, make_renter, next_hour
from tests.financing_fixtures import T0, settle

pytestmark = pytest.mark.django_db

IBAN = "DE89370400440532013000"  # a valid test IBAN (Commerzbank, COBADEFFXXX)
BIC = "COBADEFFXXX"
WALLET = "0x52908400098527886E0F7030069857D2E4169EE7"  # EIP-55 test vector
DUE1 = T0.replace(month=12)  # the first instalment of the fixture's loan


def settle_listing(listing, renter, gross: str, at) -> Settlement:
    booking = bookings.booking_create(
        renter=renter, listing=listing, gpu_count=1, start=at - timedelta(hours=1), end=at, now=at - timedelta(hours=1)
    )
    return Settlement.objects.create(
        booking=booking,
        server=listing.server,
        interval_start=at - timedelta(hours=1),
        interval_end=at,
        gpu_seconds=3600,
        gross_amount=Decimal(gross),
    )


def earning_company(renter, *gross: str, **details):
    """An owner company whose unfinanced server earned ``gross`` (journaled: 95 % is payable)."""
    user = make_owner()
    company = user.owner_membership.company
    OwnerCompany.objects.filter(pk=company.pk).update(**details)
    listing = make_listing(user, gpu_count=4)
    for i, amount in enumerate(gross):
        settle_listing(listing, renter, amount, T0 + timedelta(hours=i + 1))
    ledger_pull()
    company.refresh_from_db()
    return company, listing


def owed(company) -> Decimal:
    return -account_balance(LedgerAccount.objects.get(code=f"owner_payable:{company.pk}"))


def run_week(**kwargs) -> PayoutRun:
    """The weekly run whose period ends after everything journaled so far."""
    return payouts.payouts_weekly(now=timezone.now() + timedelta(days=7), **kwargs)


def payout_check() -> dict:
    report = money_reconcile()
    return next(c for c in report.checks if c["name"] == PAYOUTS)


class Crash(Exception):
    """The process stops here."""


@contextmanager
def crash_on(statement: str, table: str):
    """The first ``statement`` (INSERT/UPDATE) on ``table`` raises before it reaches the database, once."""
    left = [1]
    prefix = f'{statement} "{table}"' if statement == "UPDATE" else f'INSERT INTO "{table}"'

    def wrapper(execute, sql, params, many, context):
        if left[0] and sql.startswith(prefix):
            left[0] -= 1
            raise Crash(f"crash before {sql[:40]}")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield


# --- Paid once ---------------------------------------------------------------------------


def test_a_weekly_run_pays_net_earnings_once_in_usdai_to_the_custodial_wallet(renter):
    # given a company whose server earned $1,000.00 + $234.567891: 95 % is its net, $1,172.839496
    company, _ = earning_company(renter, "1000.00", "234.567891")
    assert owed(company) == Decimal("1172.839496")

    # when the weekly run runs, and runs again (hourly beat), and an operator runs one on top
    run = run_week()
    again = run_week()
    payouts.payout_run_create(period_end=timezone.now(), trigger="operator", created_by=make_operator())

    # then one payout of the whole cents, one entry, one mint to the company's custodial wallet
    assert again.pk == run.pk and run.status == PayoutRun.Status.DONE
    payout = Payout.objects.get()
    wallet = Wallet.objects.get(company=company)
    assert (payout.run_id, payout.company_id, payout.rail, payout.status) == (run.pk, company.pk, "usdai", "sent")
    assert payout.amount == Decimal("1172.83") and payout.address == wallet.address
    entry = JournalEntry.objects.get(key=f"payout:{payout.pk}")
    assert sorted((p.account.code, p.amount) for p in entry.postings.all()) == [
        (f"owner_payable:{company.pk}", Decimal("1172.83")),
        ("usdai_external", Decimal("-1172.83")),
    ]
    op = ChainOp.objects.get(key=f"payout:{payout.pk}:mint")
    assert op.pk == payout.op_id and (op.contract, op.function) == ("USDai", "mint")
    assert op.args == [wallet.address, str(usd_to_wei(Decimal("1172.83")))]
    # the sub-cent rest stays owed, and is carried (below the minimum) by the next run
    assert owed(company) == Decimal("0.009496")
    assert JournalEntry.objects.filter(key__startswith="payout:").count() == 1
    assert payout_check()["ok"]


def test_a_company_with_a_payout_wallet_and_no_iban_is_paid_there(renter):
    company, _ = earning_company(renter, "100.00", payout_wallet_address=WALLET)
    run_week()
    payout = Payout.objects.get()
    assert (payout.rail, payout.address, payout.amount) == ("usdai", WALLET, Decimal("95.00"))
    assert not Wallet.objects.filter(company=company).exists()


def test_below_the_minimum_is_carried_then_paid_when_the_total_reaches_it(renter, settings):
    # given $40 of earnings (net $38): below the $50 minimum
    company, listing = earning_company(renter, "40.00", payout_wallet_address=WALLET)
    first = run_week()
    carried = Payout.objects.get(run=first)
    assert (carried.status, carried.amount) == ("carried", Decimal("38.000000"))
    assert "minimum" in carried.reason and carried.entry_key == "" and carried.op is None
    assert not JournalEntry.objects.filter(key__startswith="payout:").exists()
    assert owed(company) == Decimal("38.000000")

    # when $20 more is earned (net $19) and next week's run comes
    settle_listing(listing, renter, "20.00", T0 + timedelta(hours=5))
    ledger_pull()
    second = payouts.payouts_weekly(now=timezone.now() + timedelta(days=14))

    # then the carried $38 and the new $19 are paid together
    paid = Payout.objects.get(run=second)
    assert (paid.status, paid.amount) == ("sent", Decimal("57.00"))
    assert owed(company) == 0
    assert payout_check()["ok"]


# --- Withheld, refused -------------------------------------------------------------------------


def test_withheld_while_a_loan_is_past_due_then_paid_after_the_cure(loan, renter):
    # given the company's other, unfinanced server earned $1,000 (net $950), its financed one nothing
    company = loan.owner
    plain = make_listing(company.memberships.get().user, gpu_count=2)
    settle_listing(plain, renter, "1000.00", T0 + timedelta(days=2))
    ledger_pull()
    before = owed(company)
    assert before == Decimal("950.000000")
    # and the loan is 3 days past due (inside the grace period, nothing drawn yet)
    loans_service(now=DUE1 + timedelta(days=3))
    loan.refresh_from_db()
    assert loan.days_past_due == 3

    # when the run comes, the payout is withheld with the reason: nothing moves
    first = run_week()
    withheld = Payout.objects.get(run=first)
    assert (withheld.status, withheld.amount) == ("withheld", before)
    assert str(loan.public_id) in withheld.reason and "3 days past due" in withheld.reason
    assert not JournalEntry.objects.filter(key__startswith="payout:").exists()
    assert not ChainOp.objects.filter(key__startswith="payout:").exists()

    # then the reserve cures it (the draw pays what was due) and the next run pays in full
    loans_service(now=DUE1 + timedelta(days=6))
    loan.refresh_from_db()
    assert loan.days_past_due == 0
    second = payouts.payouts_weekly(now=timezone.now() + timedelta(days=14))
    paid = Payout.objects.get(run=second)
    assert (paid.status, paid.amount) == ("sent", money.cents_down(before))
    assert payout_check()["ok"]


def test_a_stored_invalid_iban_is_refused_with_a_reason_and_no_entry(renter):
    # given an IBAN stored before validation existed (one digit off)
    company, _ = earning_company(renter, "100.00", payout_iban="DE89370400440532013001")
    run = run_week()
    failed = Payout.objects.get(run=run)
    assert (failed.status, failed.rail, failed.amount) == ("failed", "sepa", Decimal("95.000000"))
    assert "IBAN" in failed.reason and "checksum" in failed.reason.lower()
    assert failed.entry_key == "" and failed.sepa_file is None
    assert not SepaFile.objects.exists()
    assert owed(company) == Decimal("95.000000")
    assert payout_check()["ok"]


# --- SEPA ------------------------------------------------------------------------------------------


def test_sepa_payouts_make_one_pain001_file_that_validates_and_clears_when_marked_sent(renter, operator):
    # given two companies paid by SEPA (one prefers it over its wallet) and one in USDai
    a, _ = earning_company(
        renter,
        "1000.00",
        payout_iban=IBAN,
        payout_bic=BIC,
        payout_account_holder="Müller GPU GmbH",
        country="DE",
        address_line1="Hauptstr. 1",
        address_line2="10115 Berlin",
    )
    b, _ = earning_company(renter, "500.00", payout_iban="NL91ABNA0417164300", payout_wallet_address=WALLET)
    c, _ = earning_company(renter, "200.00", payout_iban=IBAN, payout_wallet_address=WALLET, payout_rail="usdai")

    run = run_week()

    pa, pb, pc = (Payout.objects.get(run=run, company=x) for x in (a, b, c))
    assert (pa.rail, pb.rail, pc.rail) == ("sepa", "sepa", "usdai")
    assert (pa.amount_eur, pb.amount_eur) == (Decimal("874.00"), Decimal("437.00"))  # × 0.92 EUR/USD
    sepa_file = SepaFile.objects.get(run=run)
    assert pa.sepa_file == pb.sepa_file == sepa_file and sepa_file.total_eur == Decimal("1311.00")
    assert (pa.end_to_end_id, pb.end_to_end_id) == (f"PAYOUT-{pa.pk}", f"PAYOUT-{pb.pk}")
    # the stored XML validates against sepaxml's own pain.001.001.03 schema
    schema = xmlschema.XMLSchema(str(Path(sepaxml.__file__).parent / "schemas" / "pain.001.001.03.xsd"))
    schema.validate(sepa_file.xml)
    doc = schema.to_dict(sepa_file.xml)["CstmrCdtTrfInitn"]
    assert doc["GrpHdr"]["MsgId"] == sepa_file.message_id
    assert doc["GrpHdr"]["NbOfTxs"] == "2" and Decimal(str(doc["GrpHdr"]["CtrlSum"])) == Decimal("1311.00")
    lines = {t["PmtId"]["EndToEndId"]: t for info in doc["PmtInf"] for t in info["CdtTrfTxInf"]}
    assert set(lines) == {pa.end_to_end_id, pb.end_to_end_id}
    line_a = lines[pa.end_to_end_id]
    assert line_a["CdtrAcct"]["Id"]["IBAN"] == IBAN and line_a["CdtrAgt"]["FinInstnId"]["BIC"] == BIC
    assert line_a["Amt"]["InstdAmt"]["@Ccy"] == "EUR"
    assert Decimal(str(line_a["Amt"]["InstdAmt"]["$"])) == Decimal("874.00")
    assert line_a["Cdtr"]["Nm"] == "Muller GPU GmbH"  # transliterated, as SEPA's character set wants
    # in transit until the operator marks the file sent
    assert account_balance(LedgerAccount.objects.get(code="payouts_in_transit")) == Decimal("-1425.00")
    assert payout_check()["ok"]

    payouts.sepa_file_mark_sent(sepa_file=sepa_file, by=operator)
    payouts.sepa_file_mark_sent(sepa_file=sepa_file, by=operator)  # twice: once

    assert account_balance(LedgerAccount.objects.get(code="payouts_in_transit")) == 0
    assert JournalEntry.objects.filter(key__startswith="sepa:sent:").count() == 1
    assert set(Payout.objects.filter(rail="sepa").values_list("status", flat=True)) == {"confirmed"}
    assert payout_check()["ok"]


def test_the_money_reconciler_flags_a_payout_without_its_mint_and_a_mint_without_its_payout(renter):
    earning_company(renter, "100.00", payout_wallet_address=WALLET)
    run_week()
    payout = Payout.objects.get()
    assert payout_check()["ok"]

    # a payout whose mint is for another amount, and a stray mint claiming to be a payout
    ChainOp.objects.filter(pk=payout.op_id).update(args=[WALLET, str(usd_to_wei(Decimal("96.00")))])
    ChainOp.objects.create(key="payout:999999:mint", contract="USDai", function="mint", args=[WALLET, "1"])

    check = payout_check()
    assert not check["ok"]
    assert {d["problem"] for d in check["details"]} == {
        "its outbox mint is missing or of another amount",
        "a payout mint without its paid payout",
    }

    # and a mint of the right amount that failed on chain
    ChainOp.objects.filter(pk=payout.op_id).update(
        args=[WALLET, str(usd_to_wei(payout.amount))], status=ChainOp.Status.FAILED
    )
    assert {d["problem"] for d in payout_check()["details"]} == {
        "its mint failed on chain",
        "a payout mint without its paid payout",
    }


# --- Crashes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "table"),
    [
        ("INSERT", JournalEntry._meta.db_table),  # after the payout row, before its entry
        ("INSERT", ChainOp._meta.db_table),  # after the entry, before the mint
        ("UPDATE", Payout._meta.db_table),  # after the mint, before the payout is marked sent
    ],
)
def test_a_crash_inside_a_payout_leaves_nothing_and_the_rerun_pays_once(renter, statement, table):
    company, _ = earning_company(renter, "100.00", payout_wallet_address=WALLET)
    with crash_on(statement, table), pytest.raises(Crash):
        run_week()

    # nothing of the payout is left, the run is still open
    assert not Payout.objects.exists()
    assert not JournalEntry.objects.filter(key__startswith="payout:").exists()
    assert not ChainOp.objects.filter(key__startswith="payout:").exists()
    assert PayoutRun.objects.get().status == "running"
    assert owed(company) == Decimal("95.000000")

    run = run_week()
    assert run.status == "done"
    assert Payout.objects.get().amount == Decimal("95.00") and owed(company) == 0
    assert ChainOp.objects.filter(key__startswith="payout:").count() == 1
    assert payout_check()["ok"]


def test_a_crash_before_the_sepa_file_is_built_is_finished_by_the_rerun(renter):
    earning_company(renter, "100.00", payout_iban=IBAN)
    with crash_on("UPDATE", SepaFile._meta.db_table), pytest.raises(Crash):
        run_week()
    # the payout and its line are committed, the file not built yet
    payout = Payout.objects.get()
    assert payout.status == "sent" and payout.sepa_file.xml == ""
    assert payout_check()["ok"]

    run_week()
    sepa_file = SepaFile.objects.get()
    assert f"<EndToEndId>PAYOUT-{payout.pk}</EndToEndId>" in sepa_file.xml
    assert Payout.objects.count() == 1 and PayoutRun.objects.get().status == "done"
    assert payout_check()["ok"]


# --- Statements ------------------------------------------------------------------------------------------


def test_the_statement_lines_per_server_sum_to_the_payable_credits_of_the_period(loan, renter):
    # given a financed server and an unfinanced one of the same company, both earning
    company = loan.owner
    owner_user = company.memberships.get().user
    plain = make_listing(owner_user, gpu_count=2)
    settle_listing(plain, renter, "400.00", T0 + timedelta(days=2))
    # and the financed one's revenue repays the loan over the year, so its reserve is released
    settle(loan, renter, "20000.00", T0 + timedelta(days=1))
    for month in range(1, 13):
        settle(loan, renter, "5000.00", T0 + timedelta(days=30 * month + 1))
    ledger_pull()
    loans_service(now=T0 + timedelta(days=400))
    loan.refresh_from_db()
    assert loan.status == "repaid"
    run = run_week()

    statement = payout_statement(company=company, run=run)

    by_server = {line.server_id: line for line in statement.lines}
    financed = by_server[loan.collateral.server_id]
    unfinanced = by_server[plain.server_id]
    assert unfinanced.gross == Decimal("400.000000") and unfinanced.platform_fee == Decimal("20.000000")
    assert unfinanced.net == Decimal("380.000000") and unfinanced.debt_service == 0 and unfinanced.insurance == 0
    assert financed.gross == Decimal("80000.000000") and financed.insurance == Decimal("800.000000")
    assert financed.platform_fee == Decimal("4000.000000") and financed.reserve_released == loan.reserve_funded
    interest_paid = -money.sum_of(Posting.objects.filter(account__code=f"interest:{loan.pk}", line="interest"))
    assert financed.debt_service == Decimal("12000") + interest_paid
    for line in statement.lines:
        assert line.gross - line.platform_fee - line.insurance - line.debt_service - line.reserve_held == line.owner
        assert line.owner + line.reserve_released + line.claims == line.net
    credits = -money.sum_of(
        Posting.objects.filter(
            account__code=f"owner_payable:{company.pk}", amount__lt=0, entry__created_at__lt=run.period_end
        )
    )
    assert statement.total.net == sum(line.net for line in statement.lines) == credits == statement.earned
    assert statement.opening + statement.earned - statement.paid == statement.closing
    assert statement.paid == Payout.objects.get(run=run).amount == money.cents_down(credits)


# --- Chain --------------------------------------------------------------------------------------------


def test_a_usdai_payout_sent_through_the_outbox_is_held_on_chain_and_reconciles(chain, renter):
    # given a booking paid ($1,000: 1 GPU × 10 h × $100) and fully used, as the marketplace records it
    user = make_owner()
    OwnerCompany.objects.filter(pk=user.owner_membership.company.pk).update(payout_wallet_address=WALLET)
    listing = make_listing(user, gpu_count=1, price="100.00")
    start = next_hour(2)
    booking = bookings.booking_create(
        renter=renter, listing=listing, gpu_count=1, start=start, end=start + timedelta(hours=10)
    )
    booking = bookings.booking_pay(booking=booking, renter=renter)
    bookings.booking_record_usage(
        booking=booking, key="use", interval_start=start, interval_end=start + timedelta(hours=10), gpu_seconds=36000
    )
    ledger_pull()
    run_week()
    drain()
    payouts.payouts_confirm()

    payout = Payout.objects.get()
    assert payout.status == "confirmed" and payout.op.status == ChainOp.Status.CONFIRMED
    assert chain.call("USDai", "balanceOf", WALLET) == usd_to_wei(Decimal("950.00"))
    report = chain_reconcile()
    assert report.mismatches == 0, [c for c in report.checks if not c["ok"]]
    assert money_reconcile().mismatches == 0


# --- Races ---------------------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_runs_of_the_same_period_at_once_pay_once(catalogue):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL); CI runs it there")
    renter = make_renter()
    company, _ = earning_company(renter, "100.00", payout_wallet_address=WALLET)
    now = timezone.now() + timedelta(days=7)

    def attempt(i: int) -> None:
        if i % 2:
            payouts.payouts_weekly(now=now)
        else:
            payouts.payout_run_create(period_end=timezone.now(), trigger="operator")

    outcomes = race(4, attempt)

    assert outcomes == ["ok"] * 4
    assert Payout.objects.filter(status="sent").count() == 1
    assert JournalEntry.objects.filter(key__startswith="payout:").count() == 1
    assert ChainOp.objects.filter(key__startswith="payout:").count() == 1
    assert owed(company) == 0


def test_an_iban_stored_with_spaces_and_lower_case_is_paid_in_a_file_that_validates(renter):
    # given a company whose IBAN was stored as typed (before the form normalised it)
    company, _ = earning_company(renter, "1000.00", payout_iban="de89 3704 0044 0532 0130 00", payout_bic="cobadeffxxx")
    _, _ = earning_company(renter, "1000.00", payout_iban=IBAN)

    run = run_week()

    # then both are paid in one file that the schema accepts, with the IBAN as banks expect it
    assert run.status == PayoutRun.Status.DONE
    payout = Payout.objects.get(company=company)
    assert (payout.iban, payout.bic) == (IBAN, BIC)
    sepa_file = SepaFile.objects.get()
    assert sepa_file.xml.count(f"<IBAN>{IBAN}</IBAN>") == 2
