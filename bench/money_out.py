"""Money out at scale: owner payouts, the chain watcher and SIWE, on PostgreSQL and the embedded chain.

1. Payouts. Seeds ``companies`` owner companies (default 1,000) in bulk, each with one
   unfinanced server whose two settlements are journaled by the waterfall
   (``settlements_journal``: the earnings are the ledger's own ``owner_payable:<id>``
   credits). The mix, by company number modulo 20: 0 has a loan 4 days past due
   (withheld), 1-2 earn below the minimum (carried), 3 has neither IBAN nor payout wallet
   (USDai to a custodial wallet the run creates), 4 has a stored IBAN that fails its
   checksum (failed), 5-11 are paid by SEPA (generated German IBANs; 11 also has a wallet
   and prefers SEPA), 12-19 in USDai to their payout wallet (19 also has an IBAN and
   prefers USDai). Gross amounts carry micro-dollars, so most payouts leave a sub-cent rest.
   Times ``payouts_weekly`` (payouts/s over every company it decides for), then calls it
   again (the hourly beat: returns the done run) and resumes it as after a crash just
   before the run was marked done (status set back to running: every company is skipped).
   Both must add no payout, entry, outbox row or SEPA file. The SEPA file(s) are validated
   against sepaxml's pain.001.001.03 XSD with xmlschema and their lines counted; the
   outbox is sent to the embedded chain, ``payouts_confirm`` confirms the mints, then
   ``money_reconcile``'s payouts check and ``chain_reconcile`` must find nothing, and what
   is left on the payable accounts must be exactly the unpaid (withheld, carried, failed)
   amounts plus the sub-cent rests of the paid ones. (The seeded bookings carry no
   captured payment, so the reconciler's booking and escrow checks fail by construction;
   they are listed in the output, not counted.)
2. Chain watcher. ``events`` (default 500) events from users' own wallets: outside
   accounts linked by SIWE (``wallet_link``) deposit into sUSDai from their own keys, and
   an outside account sends USDai to lenders' custodial addresses; every transaction is
   signed here and broadcast, as a browser wallet does. After one untimed catch-up of the
   set-up's blocks, ``chain_watch`` is timed over the K events (events/s); a second run
   applies 0, and a re-read of the same blocks (the cursor set back to before them, as a
   lost cursor or a second watcher would) applies 0 too; ``chain_reconcile`` finds nothing.
   (Not from block 0: on eth-tester that read costs minutes, see the floors below.)
3. SIWE. ``siwe_parse`` + ``siwe_signer`` (parse and recover) of M signed messages per
   second, and the full ``siwe_nonce_issue`` + ``wallet_link`` of the linked lenders.

Floors (goals), from runs on this 2-core machine (measured: about 80 payouts/s at 1,000
companies, 17 events/s end to end, of which the watcher's own work runs at about 135/s):

- payouts ≥ 50/s. A payout is its own transaction of about twenty statements (the look,
  the lock, three sums of the payable account, the past-due look, the row, the entry with
  its balance trigger, the outbox row or the SEPA line, the commit), so it is bound by
  PostgreSQL round trips; 50/s pays 10,000 companies in under three and a half minutes of
  one worker, once a week.
- watcher ≥ 10 events/s end to end on the embedded chain. Most of that time is the node:
  eth-tester answers ``eth_getLogs`` by looking each transaction's receipt up block by
  block from the head, so a range's cost grows with its transactions times the chain's
  length (a real node indexes logs). The node's share is timed by wrapping the adapter's
  ``contract_logs`` (the real one is called), and the rest, the watcher's own work (one
  transaction per event: the event row, its entry, the operation row), must reach
  ≥ 75 events/s, which keeps one watcher ahead of a busy day's own-wallet events.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test python -m bench.money_out [companies] [events]
"""

import json
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

COMPANIES = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000
EVENTS = int(sys.argv[2]) if len(sys.argv) > 2 else 500
SIWE_MESSAGES = 500
LINKED = 10  # outside accounts linked to lenders (they make the deposits)
E18 = 10**18
BIC = "COBADEFFXXX"
BAD_IBAN = "DE89370400440532013001"  # one digit off a valid test IBAN: the checksum fails
GOAL_PAYOUTS_PER_S = 50
GOAL_EVENTS_PER_S = 10
GOAL_APPLIED_PER_S = 75  # the watcher's own work, the node's time taken out


def _kind(i: int) -> str:
    k = i % 20
    if k == 0:
        return "past_due"
    if k in (1, 2):
        return "below_minimum"
    if k == 3:
        return "custodial"
    if k == 4:
        return "bad_iban"
    if k <= 11:
        return "sepa"
    return "wallet"


def _gross(i: int, kind: str) -> tuple[Decimal, Decimal]:
    """Two settlements' gross amounts (micro-dollars, as the meter writes them)."""
    if kind == "below_minimum":
        return Decimal("20.000001") + Decimal(i % 7), Decimal("11.123457")  # net < $50
    base = Decimal(100 + (i * 37) % 4900)
    return base + Decimal("0.123457"), Decimal(60 + i % 90) + Decimal("0.000003") * (i % 5)


def seed_companies(n: int, now: datetime) -> None:
    from eth_account import Account
    from schwifty import IBAN

    from accounts.models import OwnerCompany, OwnerMembership, User
    from bench._seed import seed_pledged_collateral
    from financing.models import Loan
    from marketplace.models import Booking, Gpu, GpuModel, Listing, Region, Server, Settlement
    from tests.factories import make_renter

    region = Region.objects.get(code="us-east")
    model = GpuModel.objects.get(name="H100 80GB")
    renter = make_renter()
    users = User.objects.bulk_create([User(email=f"payout-owner-{i}@example.com", password="!") for i in range(n)])
    kinds = [_kind(i) for i in range(n)]
    rows = []
    for i, kind in enumerate(kinds):
        details: dict = {"name": f"Payout Owner {i:05d}", "country": "DE"}
        if kind in ("sepa", "past_due"):
            details |= {
                "payout_iban": str(IBAN.generate("DE", bank_code="37040044", account_code=f"{i + 1:010d}")),
                "payout_bic": BIC,
                "payout_account_holder": f"Payout Owner {i:05d} GmbH",
                "address_line1": f"Hauptstr. {i % 200 + 1}",
                "address_line2": "10115 Berlin",
            }
            if i % 20 == 11:
                details |= {"payout_wallet_address": Account.create().address, "payout_rail": "sepa"}
        elif kind == "bad_iban":
            details |= {"payout_iban": BAD_IBAN}
        elif kind in ("wallet", "below_minimum"):
            details |= {"payout_wallet_address": Account.create().address}
            if i % 20 == 19:
                details |= {"payout_iban": "NL91ABNA0417164300", "payout_rail": "usdai"}
        rows.append(OwnerCompany(**details))
    companies = OwnerCompany.objects.bulk_create(rows, batch_size=2000)
    OwnerMembership.objects.bulk_create(
        [OwnerMembership(company=c, user=u, level="admin") for c, u in zip(companies, users, strict=True)],
        batch_size=2000,
    )
    servers = Server.objects.bulk_create(
        [
            Server(owner=c, hostname=f"po-{i:05d}", region=region, cpu_milli=192000, memory_mib=2097152)
            for i, c in enumerate(companies)
        ],
        batch_size=2000,
    )
    Gpu.objects.bulk_create([Gpu(server=s, slot=0, serial=f"PO{s.pk:07d}", model=model) for s in servers])
    listings = Listing.objects.bulk_create(
        [
            Listing(
                server=s,
                gpu_model=model,
                vram_gb=80,
                region=region,
                gpus_in_service=1,
                price_per_gpu_hour=Decimal("2.49"),
            )
            for s in servers
        ],
        batch_size=2000,
    )
    start = now - timedelta(days=2)
    bookings = Booking.objects.bulk_create(
        [
            Booking(
                renter=renter,
                listing=listing,
                server_id=listing.server_id,
                gpu_count=1,
                start=start,
                end=now,
                price_per_gpu_hour=Decimal("2.49"),
                amount=Decimal("119.52"),
                status="active",
                amount_paid=Decimal("119.52"),
            )
            for listing in listings
        ],
        batch_size=2000,
    )
    settlements = []
    for i, booking in enumerate(bookings):
        for k, gross in enumerate(_gross(i, kinds[i])):
            at = start + timedelta(hours=k + 1)
            settlements.append(
                Settlement(
                    booking=booking,
                    server_id=booking.server_id,
                    interval_start=at - timedelta(hours=1),
                    interval_end=at,
                    gpu_seconds=3600,
                    gross_amount=gross,
                )
            )
    Settlement.objects.bulk_create(settlements, batch_size=5000)

    # A loan 4 days past due on a second server of each "past_due" company (its payouts are
    # withheld). Loans rows only: no disbursement (nothing on the ledger or the chain), the
    # server earns nothing; ``company_past_due`` reads the loan's status and days past due.
    late = [c for c, kind in zip(companies, kinds, strict=True) if kind == "past_due"]
    financed = Server.objects.bulk_create(
        [Server(owner=c, hostname=f"po-loan-{c.pk}", region=region, cpu_milli=192000, memory_mib=2097152) for c in late]
    )
    collateral, appraisals = seed_pledged_collateral(financed, approved_at=start)
    Loan.objects.bulk_create(
        [
            Loan(
                owner_id=s.owner_id,
                collateral=c,
                appraisal=a,
                principal=Decimal("100000"),
                apr=Decimal("0.15"),
                tenor_months=12,
                ltv_at_origination=Decimal("0.625"),
                status="active",
                approved_at=start,
                interest_accrued_to=start,
                days_past_due=4,
            )
            for s, c, a in zip(financed, collateral, appraisals, strict=True)
        ]
    )


def _counts() -> dict[str, int]:
    from financing.models import ChainOp, JournalEntry, Payout, SepaFile

    return {
        "payouts": Payout.objects.count(),
        "entries": JournalEntry.objects.count(),
        "chain_ops": ChainOp.objects.count(),
        "sepa_files": SepaFile.objects.count(),
    }


def _payables() -> dict[int, Decimal]:
    """Per company: what its payable account holds (credit balance, USD)."""
    from django.db.models import Sum

    from financing.models import Posting

    rows = (
        Posting.objects.filter(account__code__startswith="owner_payable:", account__owner__isnull=False)
        .values("account__owner_id")
        .annotate(total=Sum("amount"))
    )
    return {r["account__owner_id"]: -r["total"] for r in rows}


def _drain() -> dict[str, int]:
    """Send the outbox until nothing is left that can go now (as ``tests.chain_fixtures.drain``)."""
    from financing.services import outbox

    total = {"confirmed": 0, "failed": 0, "waiting": 0}
    for _ in range(1000):
        done = outbox.chain_send(max_ops=500)
        for k in total:
            total[k] += int(done.get(k, 0))
        if not done["confirmed"] and not done["failed"]:
            break
    return total


def bench_payouts(now: datetime) -> dict:
    import sepaxml
    import xmlschema
    from django.db import connection

    from financing.models import Payout, PayoutRun, SepaFile
    from financing.services import payouts
    from financing.services.money_reconcile import PAYOUTS, money_reconcile
    from financing.services.reconcile import chain_reconcile
    from financing.services.revenue import settlements_journal

    t0 = time.perf_counter()
    seed_companies(COMPANIES, now)
    while settlements_journal(batch=5000):
        pass
    seed_seconds = time.perf_counter() - t0
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    owed_before = _payables()
    assert len(owed_before) == COMPANIES

    # The weekly run whose period ends after everything journaled so far.
    week_end = now + timedelta(days=7)
    before = _counts()
    t0 = time.perf_counter()
    run = payouts.payouts_weekly(now=week_end)
    run_seconds = time.perf_counter() - t0
    after = _counts()
    decided = Payout.objects.filter(run=run).count()
    by_status = {s: Payout.objects.filter(run=run, status=s).count() for s in ("sent", "withheld", "carried", "failed")}
    by_rail = {r: Payout.objects.filter(run=run, status="sent", rail=r).count() for r in ("usdai", "sepa")}

    # Again (the hourly beat), and resumed as after a crash before the run was marked done.
    again = payouts.payouts_weekly(now=week_end)
    PayoutRun.objects.filter(pk=run.pk).update(status=PayoutRun.Status.RUNNING, finished_at=None)
    t0 = time.perf_counter()
    resumed = payouts.payouts_weekly(now=week_end)
    resume_seconds = time.perf_counter() - t0
    repeat = _counts()
    exactly_once = repeat == after and again.pk == resumed.pk == run.pk and resumed.status == PayoutRun.Status.DONE

    # The SEPA file(s) against the pain.001.001.03 schema that ships with sepaxml.
    schema = xmlschema.XMLSchema(str(Path(sepaxml.__file__).parent / "schemas" / "pain.001.001.03.xsd"))
    sepa_lines, sepa_valid, sepa_files = 0, True, list(SepaFile.objects.filter(run=run).order_by("pk"))
    t0 = time.perf_counter()
    for sepa_file in sepa_files:
        errors = list(schema.iter_errors(sepa_file.xml))
        doc = schema.to_dict(sepa_file.xml)["CstmrCdtTrfInitn"]
        lines = [t for info in doc["PmtInf"] for t in info["CdtTrfTxInf"]]
        ids = {t["PmtId"]["EndToEndId"] for t in lines}
        expected = set(sepa_file.payouts.values_list("end_to_end_id", flat=True))
        sepa_valid &= (
            not errors
            and ids == expected
            and int(doc["GrpHdr"]["NbOfTxs"]) == len(lines)
            and Decimal(str(doc["GrpHdr"]["CtrlSum"])) == sepa_file.total_eur
        )
        sepa_lines += len(lines)
    validate_seconds = time.perf_counter() - t0
    sepa_valid &= bool(sepa_files) and sepa_lines == by_rail["sepa"]

    t0 = time.perf_counter()
    sent = _drain()
    drain_seconds = time.perf_counter() - t0
    confirmed = payouts.payouts_confirm()
    # The bulk-seeded bookings have no captured payment, so the reconciler's booking and escrow
    # checks fail here (and log an alert each); only its payouts check is this benchmark's.
    logging.getLogger("financing.services.money_reconcile").setLevel(logging.CRITICAL)
    money_report = money_reconcile()
    payouts_check = next(c for c in money_report.checks if c["name"] == PAYOUTS)
    chain_report = chain_reconcile()

    # What is left on the payable accounts: the unpaid amounts, and the paid ones' sub-cent rests.
    left = sum(_payables().values(), Decimal(0))
    expected_left = Decimal(0)
    for p in Payout.objects.filter(run=run):
        expected_left += owed_before[p.company_id] - p.amount if p.status in Payout.PAID else p.amount
    undecided = set(owed_before) - set(Payout.objects.filter(run=run).values_list("company_id", flat=True))
    expected_left += sum((owed_before[c] for c in undecided), Decimal(0))
    return {
        "companies": COMPANIES,
        "seed_seconds": round(seed_seconds, 1),
        "run_seconds": round(run_seconds, 2),
        "payouts_decided": decided,
        "payouts_per_s": round(decided / run_seconds, 1),
        "by_status": by_status,
        "sent_by_rail": by_rail,
        "created": {k: after[k] - before[k] for k in after},
        "second_and_resumed_run_added": {k: repeat[k] - after[k] for k in after},
        "resume_seconds": round(resume_seconds, 2),
        "exactly_once": exactly_once,
        "sepa_files": len(sepa_files),
        "sepa_lines": sepa_lines,
        "sepa_total_eur": str(sum((f.total_eur for f in sepa_files), Decimal(0))),
        "sepa_validate_seconds": round(validate_seconds, 2),
        "sepa_valid": bool(sepa_valid),
        "outbox_sent": sent,
        "outbox_seconds": round(drain_seconds, 1),
        "usdai_confirmed": confirmed,
        "money_reconcile_payouts_problems": len(payouts_check.get("details") or []),
        "money_reconcile_payouts_ok": bool(payouts_check["ok"]),
        "money_reconcile_other_failing": [c["name"][:40] for c in money_report.checks if not c["ok"]],
        "chain_reconcile_mismatches": chain_report.mismatches,
        "chain_reconcile_in_flight": chain_report.in_flight,
        "owner_payable_left": str(left),
        "owner_payable_left_expected": str(expected_left),
        "owner_payable_left_matches": left == expected_left,
    }


class Signer:
    """An outside account's wallet: signs and broadcasts calls, tracking its own nonce."""

    def __init__(self, chain, account):
        self.chain, self.account = chain, account
        self.nonce = chain.w3.eth.get_transaction_count(account.address)

    def send(self, tx) -> str:
        from eth_account import Account

        tip = 10**9
        signed = Account.sign_transaction(
            {
                "to": tx.to,
                "data": tx.data,
                "value": 0,
                "nonce": self.nonce,
                "gas": 500_000,
                "maxFeePerGas": self.chain.base_fee() * 2 + tip,
                "maxPriorityFeePerGas": tip,
                "chainId": self.chain.chain_id,
                "type": 2,
            },
            self.account.key,
        )
        self.chain.broadcast("0x" + signed.raw_transaction.hex().removeprefix("0x"))
        self.nonce += 1
        return "0x" + signed.hash.hex().removeprefix("0x")

    def call(self, contract: str, function: str, args: list) -> str:
        from financing.chain.own_wallets import unsigned_call

        return self.send(
            unsigned_call(self.chain, sender=self.account.address, contract=contract, function=function, args=args)
        )


def bench_watcher() -> dict:
    from eth_account import Account

    from financing.chain.client import usd_to_wei
    from financing.chain.node import get_chain
    from financing.chain.siwe import siwe_sign
    from financing.models import ChainCursor, ChainEvent, Wallet
    from financing.services import chain_watch as watch
    from financing.services.reconcile import chain_reconcile
    from financing.services.wallet_links import siwe_nonce_issue, wallet_link
    from financing.services.wallets import usdai_buy, usdai_withdraw
    from tests.factories import make_lender

    chain = get_chain()
    deposits = EVENTS // 2
    transfers = EVENTS - deposits
    per_deposit, per_transfer = Decimal("1.5"), Decimal("2.25")
    per_linked = per_deposit * (-(-deposits // LINKED))

    # Set-up: lenders with custodial wallets, a funder who sends USDai out to a "whale" outside
    # account, ten outside accounts linked by SIWE, funded by the whale, that approve the vault.
    lenders = [make_lender() for _ in range(LINKED * 2)]
    for lender in lenders:
        usdai_buy(user=lender, amount=Decimal("1"))
    funder = make_lender()
    whale_total = per_linked * LINKED + per_transfer * transfers
    usdai_buy(user=funder, amount=whale_total)
    whale = Signer(chain, Account.create())
    chain.fund(whale.account.address, 10 * E18)
    usdai_withdraw(user=funder, address=whale.account.address, amount=whale_total)
    outside = []
    t0 = time.perf_counter()
    for lender in lenders[:LINKED]:
        account = Account.create()
        issued = siwe_nonce_issue(user=lender, address=account.address, domain="testserver", uri="http://testserver/")
        wallet_link(
            user=lender, message=issued.message, signature=siwe_sign(issued.message, account.key), domain="testserver"
        )
        outside.append(Signer(chain, account))
    link_seconds = time.perf_counter() - t0
    set_up = _drain()
    assert set_up["failed"] == 0, set_up
    for signer in outside:
        chain.fund(signer.account.address, E18)
        whale.call("USDai", "transfer", [signer.account.address, usd_to_wei(per_linked)])
        signer.call("USDai", "approve", [chain.addresses["SUSDai"], 2**256 - 1])
    catch_up = watch.chain_watch(max_batches=1000)

    # The K events: deposits from the linked wallets, USDai sent in to custodial addresses.
    custodial = [Wallet.objects.get(user=lender).address for lender in lenders]
    t0 = time.perf_counter()
    for i in range(deposits):
        signer = outside[i % LINKED]
        signer.call("SUSDai", "deposit", [usd_to_wei(per_deposit), signer.account.address])
    for i in range(transfers):
        whale.call("USDai", "transfer", [custodial[i % len(custodial)], usd_to_wei(per_transfer)])
    send_seconds = time.perf_counter() - t0
    events_before = ChainEvent.objects.count()

    # The node's share of the watcher's time: its calls to the adapter's log reader, timed
    # (the real reader is called; on the embedded chain eth-tester answers ``eth_getLogs`` by
    # looking each transaction up block by block, which grows with the chain).
    reader, node_seconds = watch.contract_logs, [0.0]

    def timed_logs(*args, **kwargs):
        start = time.perf_counter()
        try:
            return reader(*args, **kwargs)
        finally:
            node_seconds[0] += time.perf_counter() - start

    watch.contract_logs = timed_logs
    try:
        t0 = time.perf_counter()
        first = watch.chain_watch(max_batches=1000)
        watch_seconds = time.perf_counter() - t0
        first_node_seconds = node_seconds[0]
        second = watch.chain_watch(max_batches=1000)
        # The cursor set back to before the K events (a lost cursor, a second watcher): read again.
        ChainCursor.objects.filter(chain_id=chain.chain_id).update(block=catch_up.to_block)
        t0 = time.perf_counter()
        reread = watch.chain_watch(max_batches=1000)
        reread_seconds = time.perf_counter() - t0
    finally:
        watch.contract_logs = reader
    report = chain_reconcile()
    return {
        "events_sent": EVENTS,
        "linked_wallets": LINKED,
        "siwe_links_per_s": round(LINKED / link_seconds, 1),
        "catch_up_applied": catch_up.applied,
        "blocks": chain.head(),
        "send_seconds": round(send_seconds, 1),
        "watch_seconds": round(watch_seconds, 2),
        "applied": first.applied,
        "events_per_s": round(first.applied / watch_seconds, 1),
        "watch_node_seconds": round(first_node_seconds, 2),
        "watch_apply_seconds": round(watch_seconds - first_node_seconds, 2),
        "events_applied_per_s_excluding_node": round(first.applied / (watch_seconds - first_node_seconds), 1),
        "watch_errors": [r.error for r in (catch_up, first, second, reread) if r.error],
        "second_run_applied": second.applied,
        "reread_blocks": f"{reread.from_block}-{reread.to_block}",
        "reread_applied": reread.applied,
        "reread_seconds": round(reread_seconds, 2),
        "chain_events_added": ChainEvent.objects.count() - events_before,
        "chain_reconcile_mismatches": report.mismatches,
        "chain_reconcile_failed": [c["name"] for c in report.checks if not c["ok"]],
        "watcher_applied_once": first.applied == EVENTS
        and second.applied == 0
        and reread.applied == 0
        and reread.to_block == first.to_block
        and ChainEvent.objects.count() - events_before == EVENTS,
    }


def bench_siwe() -> dict:
    from eth_account import Account

    from financing.chain.siwe import SiweMessage, siwe_message, siwe_parse, siwe_sign, siwe_signer

    issued = datetime.now(UTC).replace(microsecond=0)
    signed = []
    for i in range(SIWE_MESSAGES):
        account = Account.create()
        text = siwe_message(
            SiweMessage(
                domain="infrafi.example",
                address=account.address,
                statement="Link this wallet to your InfraFi account.",
                uri="https://infrafi.example/wallet/link/",
                chain_id=31337,
                nonce=f"bench{i:08d}nonce",
                issued_at=issued,
                expiration_time=issued + timedelta(minutes=10),
            )
        )
        signed.append((account.address, text, siwe_sign(text, account.key)))
    t0 = time.perf_counter()
    ok = sum(siwe_parse(text).address == address == siwe_signer(text, sig) for address, text, sig in signed)
    seconds = time.perf_counter() - t0
    return {"messages": SIWE_MESSAGES, "verified": ok, "verified_per_s": round(SIWE_MESSAGES / seconds)}


def main() -> None:
    started = time.perf_counter()
    from bench._django import test_database

    with test_database() as connection:
        if connection.vendor != "postgresql":
            sys.exit("bench.money_out needs PostgreSQL: set DATABASE_URL=postgres://…")
        from django.conf import settings

        settings.CHAIN_RPC_URL = ""
        from financing.chain import node

        node.chain_reset()
        now = datetime.now(UTC).replace(microsecond=0)
        payouts = bench_payouts(now)
        print(f"payouts: {json.dumps(payouts)}", flush=True)
        watcher = bench_watcher()
        print(f"watcher: {json.dumps(watcher)}", flush=True)
        siwe = bench_siwe()
    result = {
        "benchmark": "money_out",
        "database": "postgresql",
        "payouts": payouts,
        "watcher": watcher,
        "siwe": siwe,
        "goal_payouts_per_s_at_least": GOAL_PAYOUTS_PER_S,
        "goal_events_per_s_at_least": GOAL_EVENTS_PER_S,
        "goal_applied_per_s_excluding_node_at_least": GOAL_APPLIED_PER_S,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    result["goals"] = {
        "exactly_once": payouts["exactly_once"],
        "reconciled": payouts["money_reconcile_payouts_ok"]
        and payouts["chain_reconcile_mismatches"] == 0
        and watcher["chain_reconcile_mismatches"] == 0
        and payouts["owner_payable_left_matches"],
        "sepa_valid": payouts["sepa_valid"],
        "watcher_applied_once": watcher["watcher_applied_once"],
        "payouts_per_second": payouts["payouts_per_s"] >= GOAL_PAYOUTS_PER_S,
        "events_per_second": watcher["events_per_s"] >= GOAL_EVENTS_PER_S,
        "applied_per_second_excluding_node": watcher["events_applied_per_s_excluding_node"] >= GOAL_APPLIED_PER_S,
        "siwe_all_verified": siwe["verified"] == siwe["messages"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
