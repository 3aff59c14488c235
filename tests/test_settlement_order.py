"""Several ledger-pull workers keep a loan's revenue in settlement order (PostgreSQL, real
threads): a worker that finds an earlier settlement of a financed server held by another
leaves that server's later ones for its next run."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction

from financing.models import JournalEntry
from financing.services.revenue import settlements_journal
from marketplace.models import Settlement
from tests.financing_fixtures import T0, settle

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_a_worker_holding_an_earlier_settlement_keeps_the_loans_revenue_in_order(catalogue, loan, renter):
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL")
    first = settle(loan, renter, "3000.00", T0 + timedelta(days=10))
    second = settle(loan, renter, "2000.00", T0 + timedelta(days=11))

    # given another worker that has claimed the first settlement and not finished with it
    held, release = threading.Event(), threading.Event()

    def other_worker():
        try:
            with transaction.atomic():
                list(Settlement.objects.select_for_update().filter(pk=first.pk))
                held.set()
                release.wait(10)
        finally:
            connections.close_all()

    worker = threading.Thread(target=other_worker)
    worker.start()
    assert held.wait(10)

    # when this worker pulls the ledger, it does not apply the later settlement first
    try:
        assert settlements_journal() == 0
        second.refresh_from_db()
        assert second.processed_at is None
    finally:
        release.set()
        worker.join()

    # and once the other is done, both are applied, the earlier first
    assert settlements_journal() == 2
    entries = {e.settlement_id: e.pk for e in JournalEntry.objects.filter(settlement__in=[first, second])}
    assert entries[first.pk] < entries[second.pk]
