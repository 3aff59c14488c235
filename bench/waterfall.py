"""The waterfall at scale: 100,000 settlements across 1,000 loans on PostgreSQL.

Seeds 1,000 financed servers (collateral approved, appraised, loan active
with its 12-month schedule and disbursement) and 100,000 settlements of
their revenue over 30 days, in bulk. Then times ``settlements_journal`` in
batches until nothing is left (settlements/s, postings/s), and in the same
run a bare bulk insert of the same postings into fresh entries of the same
tables (same triggers, committed). Goal: waterfall postings/s ≥ 0.5 × bare.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test python -m bench.waterfall [settlements] [loans]
"""

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

SETTLEMENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
LOANS = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000
BATCH = 10_000


def seed(now: datetime) -> None:
    from accounts.services import owner_company_create
    from bench._seed import seed_pledged_collateral
    from financing import schedules
    from financing.models import Instalment, JournalEntry, Loan
    from financing.services.ledger import Accounts, EntryBatch, Line
    from financing.services.loans import add_months
    from marketplace.models import Booking, Gpu, GpuModel, Listing, Region, Server, Settlement
    from tests.factories import UserFactory, make_renter

    region = Region.objects.get(code="us-east")
    model = GpuModel.objects.get(name="H100 80GB")
    company = owner_company_create(user=UserFactory(), name="Waterfall Owner")
    renter = make_renter()
    servers = Server.objects.bulk_create(
        [
            Server(owner=company, hostname=f"wf-{i:05d}", region=region, cpu_milli=192000, memory_mib=2097152)
            for i in range(LOANS)
        ]
    )
    Gpu.objects.bulk_create(
        [Gpu(server=s, slot=k, serial=f"WF{s.pk:06d}{k}", model=model) for s in servers for k in range(8)],
        batch_size=5000,
    )
    listings = Listing.objects.bulk_create(
        [
            Listing(
                server=s,
                gpu_model=model,
                vram_gb=80,
                region=region,
                gpus_in_service=8,
                price_per_gpu_hour=Decimal("2.49"),
                financed=True,
            )
            for s in servers
        ]
    )
    start = now - timedelta(days=31)
    collateral, appraisals = seed_pledged_collateral(servers, approved_at=start)
    loans = Loan.objects.bulk_create(
        [
            Loan(
                owner=company,
                collateral=c,
                appraisal=a,
                principal=Decimal("100000"),
                apr=Decimal("0.15"),
                tenor_months=12,
                ltv_at_origination=Decimal("0.625"),
                status="active",
                approved_at=start,
                interest_accrued_to=start,
            )
            for c, a in zip(collateral, appraisals, strict=True)
        ]
    )
    plan = schedules.schedule(Decimal("100000"), Decimal("0.15"), 12)
    Instalment.objects.bulk_create(
        [
            Instalment(
                loan=loan,
                number=r.number,
                due=add_months(start, r.number),
                payment=r.payment,
                interest=r.interest,
                principal=r.principal,
                balance_after=r.balance_after,
            )
            for loan in loans
            for r in plan
        ],
        batch_size=5000,
    )
    accounts, entries = Accounts(), EntryBatch()
    for loan in loans:
        entries.add(
            key=f"loan:{loan.pk}:disbursement",
            description="Disbursement",
            lines=[
                Line(accounts.loan(loan, "principal"), loan.principal, "disbursement"),
                Line(accounts.system("vault_cash"), -loan.principal, "disbursement"),
            ],
        )
    entries.flush()
    bookings = Booking.objects.bulk_create(
        [
            Booking(
                renter=renter,
                listing=listing,
                server_id=listing.server_id,
                gpu_count=8,
                start=start,
                end=now,
                price_per_gpu_hour=Decimal("2.49"),
                amount=Decimal("14342.40"),
                status="active",
                amount_paid=Decimal("14342.40"),
            )
            for listing in listings
        ]
    )
    per_loan = SETTLEMENTS // LOANS
    step = timedelta(days=30) / per_loan
    rows = []
    for k in range(per_loan):
        at = start + timedelta(days=1) + step * (k + 1)
        for booking in bookings:
            rows.append(
                Settlement(
                    booking=booking,
                    server_id=booking.server_id,
                    interval_start=at - step,
                    interval_end=at,
                    gpu_seconds=8 * int(step.total_seconds()),
                    gross_amount=Decimal("143.424000"),
                )
            )
    Settlement.objects.bulk_create(rows, batch_size=10000)
    assert JournalEntry.objects.count() == LOANS


def main() -> None:
    from bench._django import test_database

    with test_database() as connection:
        if connection.vendor != "postgresql":
            sys.exit("bench.waterfall needs PostgreSQL: set DATABASE_URL=postgres://…")
        from django.db import transaction

        from financing.models import JournalEntry, Posting
        from financing.selectors.ledger import balances
        from financing.services.revenue import settlements_journal
        from marketplace.models import Settlement

        now = datetime.now(UTC).replace(microsecond=0)
        t0 = time.perf_counter()
        seed(now)
        seed_seconds = time.perf_counter() - t0
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        postings_before = Posting.objects.count()

        t0 = time.perf_counter()
        processed = 0
        while done := settlements_journal(batch=BATCH):
            processed += done
        waterfall_seconds = time.perf_counter() - t0
        postings = Posting.objects.count() - postings_before
        books = balances()
        assert processed == Settlement.objects.count() and sum(books.values()) == 0

        # The same postings, bulk-inserted bare into fresh entries (same tables and triggers), committed.
        source = list(
            Posting.objects.filter(entry__settlement__isnull=False)
            .values_list("entry_id", "account_id", "amount", "currency", "line")
            .order_by("entry_id", "id")
        ) + list(
            Posting.objects.filter(entry__key__contains=":accrual:")
            .values_list("entry_id", "account_id", "amount", "currency", "line")
            .order_by("entry_id", "id")
        )
        assert len(source) == postings
        t0 = time.perf_counter()
        with transaction.atomic():
            old_ids = sorted({row[0] for row in source})
            fresh = JournalEntry.objects.bulk_create(
                [JournalEntry(key=f"bare:{i}", description="bare insert") for i in old_ids], batch_size=5000
            )
            new_id = {old: entry.pk for old, entry in zip(old_ids, fresh, strict=True)}
            Posting.objects.bulk_create(
                [
                    Posting(entry_id=new_id[e], account_id=a, amount=amt, currency=c, line=ln)
                    for e, a, amt, c, ln in source
                ],
                batch_size=5000,
            )
        bare_seconds = time.perf_counter() - t0
        result = {
            "benchmark": "waterfall",
            "database": "postgresql",
            "loans": LOANS,
            "settlements": processed,
            "seed_seconds": round(seed_seconds, 1),
            "waterfall_seconds": round(waterfall_seconds, 2),
            "settlements_per_s": round(processed / waterfall_seconds),
            "postings": postings,
            "postings_per_s": round(postings / waterfall_seconds),
            "bare_insert_seconds": round(bare_seconds, 2),
            "bare_postings_per_s": round(postings / bare_seconds),
            "ratio_waterfall_to_bare": round(bare_seconds / waterfall_seconds, 3),
            "goal_ratio_at_least": 0.5,
            "books_sum": str(sum(books.values())),
        }
        result["goals"] = {
            "ratio_at_least_0_5": result["ratio_waterfall_to_bare"] >= 0.5,
            "books_balance": sum(books.values()) == 0,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
