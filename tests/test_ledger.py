"""The ledger and the waterfall: worked examples with every balance written out, and properties."""

import itertools
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given
from hypothesis import strategies as st

from financing import schedules, waterfall
from financing.models import JournalEntry, Posting
from financing.selectors.ledger import account_balance, balances
from financing.services.ledger import Line, journal_post, system_account
from financing.services.revenue import ledger_pull
from marketplace.models import Settlement
from marketplace.services import bookings
from tests.factories import make_listing, next_hour

H = timedelta(hours=1)


@pytest.mark.django_db
def test_worked_example_a_booking_through_the_books(owner, renter):
    # given 2 GPUs × 3 h at $2.49 = $14.94, paid; 1 h of both GPUs delivered; then the end
    listing = make_listing(owner, price="2.49", gpu_count=2)
    booking = bookings.booking_pay(
        booking=bookings.booking_create(
            renter=renter, listing=listing, gpu_count=2, start=next_hour(2), end=next_hour(5)
        ),
        renter=renter,
    )
    bookings.booking_record_usage(
        booking=booking, key="job:1", interval_start=booking.start, interval_end=booking.start + H, gpu_seconds=7200
    )
    bookings.booking_complete(booking=booking, now=booking.end)

    # when financing pulls what the marketplace recorded
    assert ledger_pull() == {"payments": 1, "settlements": 1, "refunds": 1}

    # then every balance is exact (debit +, credit −) and the books sum to zero
    assert balances() == {
        "gateway_clearing": Decimal("4.980000"),  # 14.94 in, 9.96 refunded
        f"owner_payable:{owner.owner_membership.company.pk}": Decimal("-4.731000"),  # 4.98 − 5 % fee
        "platform_revenue": Decimal("-0.249000"),  # 5 % of 4.98
        "renter_escrow": Decimal("0.000000"),  # −14.94 + 4.98 + 9.96
    }
    assert sum(balances().values()) == 0
    assert Settlement.objects.get().processed_at is not None
    # and the revenue entry traces back to its settlement, booking and lines
    entry = JournalEntry.objects.get(settlement__isnull=False)
    assert str(booking.public_id) in entry.description
    assert sorted(entry.postings.values_list("line", "amount")) == [
        ("gross", Decimal("4.980000")),
        ("owner", Decimal("-4.731000")),
        ("platform_fee", Decimal("-0.249000")),
    ]

    # and pulling again journals nothing more
    assert ledger_pull() == {"payments": 0, "settlements": 0, "refunds": 0}
    assert JournalEntry.objects.count() == 3


@pytest.mark.django_db
def test_an_unbalanced_entry_is_refused_and_nothing_is_written():
    escrow, revenue = system_account("renter_escrow"), system_account("platform_revenue")
    with pytest.raises(ValidationError):
        journal_post(
            key="bad", description="unbalanced", lines=[Line(escrow, Decimal("1.00")), Line(revenue, Decimal("-0.99"))]
        )
    with pytest.raises(ValidationError):
        journal_post(
            key="bad2",
            description="sub-micro",
            lines=[Line(escrow, Decimal("0.0000001")), Line(revenue, Decimal("-0.0000001"))],
        )
    assert JournalEntry.objects.count() == 0 and Posting.objects.count() == 0


@pytest.mark.django_db
def test_posting_the_same_key_twice_posts_once():
    escrow, revenue = system_account("renter_escrow"), system_account("platform_revenue")
    lines = [Line(escrow, Decimal("2.50")), Line(revenue, Decimal("-2.50"))]
    first = journal_post(key="k1", description="fee", lines=lines)
    again = journal_post(key="k1", description="fee", lines=lines)
    assert first.pk == again.pk and Posting.objects.count() == 2
    assert account_balance("platform_revenue") == Decimal("-2.50")


def test_unfinanced_split_is_fee_then_owner():
    assert waterfall.split(Decimal("4.98")) == {
        "platform_fee": Decimal("0.249000"),
        "insurance": 0,
        "reserve": 0,
        "interest": 0,
        "principal": 0,
        "sweep": 0,
        "owner": Decimal("4.731000"),
    }


def test_financed_split_in_order_with_a_sweep():
    needs = waterfall.LoanNeeds(
        reserve_shortfall=Decimal("10"),
        interest_due=Decimal("20"),
        principal_due=Decimal("30"),
        outstanding_principal=Decimal("1000"),
        dscr=Decimal("1.10"),
    )
    parts = waterfall.split(Decimal("100"), loan=needs)
    assert parts == {
        "platform_fee": Decimal("5.000000"),
        "insurance": Decimal("1.000000"),
        "reserve": Decimal("10.000000"),
        "interest": Decimal("20.000000"),
        "principal": Decimal("30.000000"),
        "sweep": Decimal("17.000000"),
        "owner": Decimal("17.000000"),
    }
    # short revenue stops the waterfall where it runs dry: debt service first, the reserve's refill after it
    short = waterfall.split(Decimal("40"), loan=needs)
    assert (short["interest"], short["principal"], short["reserve"], short["owner"]) == (
        Decimal("20.000000"),
        Decimal("17.600000"),
        0,
        0,
    )
    assert list(waterfall.LINES) == ["platform_fee", "insurance", "interest", "principal", "reserve", "sweep", "owner"]
    # foreclosed: everything after costs to the loan
    gone = waterfall.split(
        Decimal("100"),
        loan=waterfall.LoanNeeds(interest_due=Decimal("3"), outstanding_principal=Decimal("500"), foreclosed=True),
    )
    assert (gone["interest"], gone["principal"], gone["owner"]) == (Decimal("3.000000"), Decimal("91.000000"), 0)


money_amounts = st.decimals(min_value=0, max_value=Decimal("1000000"), places=6, allow_nan=False, allow_infinity=False)


@given(
    gross=money_amounts,
    financed=st.booleans(),
    reserve=money_amounts,
    interest=money_amounts,
    principal=money_amounts,
    outstanding=money_amounts,
    dscr=st.one_of(st.none(), st.decimals(min_value=0, max_value=5, places=2)),
    foreclosed=st.booleans(),
)
def test_any_settlement_splits_exactly(gross, financed, reserve, interest, principal, outstanding, dscr, foreclosed):
    loan = waterfall.LoanNeeds(reserve, interest, principal, outstanding, dscr, foreclosed) if financed else None
    parts = waterfall.split(gross, loan=loan)
    assert sum(parts.values()) == gross
    assert all(value >= 0 for value in parts.values())
    if loan is None:
        assert {k for k, v in parts.items() if v} <= {"platform_fee", "owner"}


def test_worked_example_fixed_payment_schedule():
    rows = schedules.schedule(Decimal("100000"), Decimal("0.15"), 12)
    assert schedules.monthly_payment(Decimal("100000"), Decimal("0.15"), 12) == Decimal("9025.83")
    assert schedules.monthly_payment(Decimal("10000"), Decimal("0.15"), 12) == Decimal("902.58")  # USD.AI's figure
    assert [r.payment for r in rows[:11]] == [Decimal("9025.83")] * 11
    assert rows[0].interest == Decimal("1250.00") and rows[0].principal == Decimal("7775.83")
    assert rows[-1].balance_after == 0
    assert sum(r.principal for r in rows) == Decimal("100000")
    assert rows[-1].payment == rows[-1].interest + rows[-1].principal


def test_fixed_principal_schedule():
    rows = schedules.schedule(Decimal("36000"), Decimal("0.12"), 36, schedules.FIXED_PRINCIPAL)
    assert rows[0].principal == Decimal("1000.00") and rows[0].interest == Decimal("360.00")
    assert rows[1].interest == Decimal("350.00") and rows[-1].balance_after == 0
    assert sum(r.principal for r in rows) == Decimal("36000")


@given(
    principal=st.integers(100, 10_000_000),
    apr_bp=st.integers(0, 3000),
    months=st.integers(12, 36),
    kind=st.sampled_from([schedules.FIXED_PAYMENT, schedules.FIXED_PRINCIPAL]),
)
def test_schedules_repay_exactly(principal, apr_bp, months, kind):
    rows = schedules.schedule(Decimal(principal), Decimal(apr_bp) / 10000, months, kind)
    assert sum(r.principal for r in rows) == principal and rows[-1].balance_after == 0
    assert all(r.payment == r.interest + r.principal for r in rows)


def test_a_small_fixed_principal_loan_has_no_negative_instalment():
    # given $0.93 over 36 months: 36 × $0.03 of rounded principal would repay $1.08
    rows = schedules.schedule(Decimal("0.93"), Decimal("0.15"), 36, schedules.FIXED_PRINCIPAL)
    # then the first 31 instalments repay $0.03 each, nothing is repaid twice, and the rest are zero
    assert [r.principal for r in rows[:31]] == [Decimal("0.03")] * 31
    assert all(r.principal == 0 and r.balance_after == 0 for r in rows[31:])
    assert sum(r.principal for r in rows) == Decimal("0.93")


@given(
    cents=st.integers(1, 100_000),
    apr_bp=st.integers(0, 3000),
    months=st.integers(1, 36),
    kind=st.sampled_from([schedules.FIXED_PAYMENT, schedules.FIXED_PRINCIPAL]),
)
def test_schedules_of_any_size_never_go_negative(cents, apr_bp, months, kind):
    principal = Decimal(cents) / 100
    rows = schedules.schedule(principal, Decimal(apr_bp) / 10000, months, kind)
    assert sum(r.principal for r in rows) == principal and rows[-1].balance_after == 0
    assert all(r.principal >= 0 and r.interest >= 0 and r.balance_after >= 0 for r in rows)
    assert all(a.balance_after >= b.balance_after for a, b in itertools.pairwise(rows))
