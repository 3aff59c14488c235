"""Ledger rules held by PostgreSQL itself, and two workers pulling at once."""

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, connections, transaction

from core import money
from financing.models import JournalEntry, LedgerAccount, Posting
from financing.selectors.ledger import balances
from financing.services.revenue import ledger_pull
from marketplace.models import Settlement
from marketplace.services import bookings
from tests.factories import make_listing, make_owner, make_renter, next_hour

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _needs_postgres():
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL); CI runs it there")


def _accounts():
    a = LedgerAccount.objects.create(code="test_a", name="A", kind="asset")
    b = LedgerAccount.objects.create(code="test_b", name="B", kind="liability")
    return a, b


def test_the_database_refuses_an_unbalanced_entry_at_commit(catalogue):
    a, b = _accounts()
    # written behind the service's back: the deferred trigger fires at COMMIT
    with pytest.raises(IntegrityError, match="does not balance"), transaction.atomic():
        entry = JournalEntry.objects.create(key="raw-1", description="unbalanced")
        Posting.objects.create(entry=entry, account=a, amount=Decimal("10.00"))
        Posting.objects.create(entry=entry, account=b, amount=Decimal("-9.99"))
    assert JournalEntry.objects.count() == 0 and Posting.objects.count() == 0
    # a balanced one commits
    with transaction.atomic():
        entry = JournalEntry.objects.create(key="raw-2", description="balanced")
        Posting.objects.create(entry=entry, account=a, amount=Decimal("10.00"))
        Posting.objects.create(entry=entry, account=b, amount=Decimal("-10.00"))
    assert Posting.objects.count() == 2


def test_postings_and_entries_are_immutable(catalogue):
    a, b = _accounts()
    with transaction.atomic():
        entry = JournalEntry.objects.create(key="raw-3", description="balanced")
        Posting.objects.create(entry=entry, account=a, amount=Decimal("1.00"))
        Posting.objects.create(entry=entry, account=b, amount=Decimal("-1.00"))
    for attempt in (
        lambda: Posting.objects.filter(entry=entry).update(amount=Decimal("2.00")),
        lambda: Posting.objects.filter(entry=entry).delete(),
        lambda: JournalEntry.objects.filter(pk=entry.pk).update(description="rewritten"),
    ):
        with pytest.raises(IntegrityError, match="immutable"), transaction.atomic():
            attempt()
    assert sorted(Posting.objects.values_list("amount", flat=True)) == [Decimal("-1.000000"), Decimal("1.000000")]


def test_two_workers_pulling_at_once_journal_each_settlement_exactly_once(catalogue):
    listing = make_listing(make_owner(), gpu_count=8, price="1.00")
    renter = make_renter()
    start = next_hour(2)
    for i in range(8):
        booking = bookings.booking_pay(
            booking=bookings.booking_create(
                renter=renter, listing=listing, gpu_count=1, start=start, end=start + timedelta(hours=10)
            ),
            renter=renter,
        )
        for k in range(15):
            bookings.booking_record_usage(
                booking=booking, key=f"b{i}:{k}", interval_start=start, interval_end=start, gpu_seconds=2400
            )
    assert Settlement.objects.count() == 120
    results, barrier = [], threading.Barrier(2)

    def worker():
        try:
            barrier.wait()
            totals = {"payments": 0, "settlements": 0, "refunds": 0}
            while True:
                done = ledger_pull(batch=7)
                for key, value in done.items():
                    totals[key] += value
                if not any(done.values()):
                    break
            results.append(totals)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sum(r["settlements"] for r in results) == 120 and sum(r["payments"] for r in results) == 8
    assert JournalEntry.objects.filter(settlement__isnull=False).count() == 120
    assert not Settlement.objects.filter(processed_at__isnull=True).exists()
    books = balances()
    assert sum(books.values()) == 0
    assert books["renter_escrow"] == Decimal("-80.000000") + Decimal("8") * Decimal("10.00")  # all 8 × $10 delivered
    # 5 % of each settlement, each rounded half-up to the micro-dollar (not 5 % of the $80 total)
    fees = sum(money.usd(s.gross_amount * Decimal("0.05")) for s in Settlement.objects.all())
    assert books["platform_revenue"] == -fees and fees == Decimal("3.999960")
