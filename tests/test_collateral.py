"""Collateral records and appraisals: worked figures, bad input, operator approval."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from financing import appraisal
from financing.models import Appraisal, Collateral
from financing.services.collateral import appraisal_run, appraisals_daily, collateral_approve, collateral_register
from marketplace.models import Listing
from marketplace.services import bookings
from tests.factories import make_listing, make_owner, next_hour

TODAY = date(2026, 11, 24)


def test_depreciation_declines_20_percent_a_year_down_to_the_floor():
    price = Decimal("30000")
    assert appraisal.depreciated_value(price, Decimal(0), Decimal("0.20"), Decimal("0.10")) == Decimal("30000.00")
    assert appraisal.depreciated_value(price, Decimal(1), Decimal("0.20"), Decimal("0.10")) == Decimal("24000.00")
    assert appraisal.depreciated_value(price, Decimal(2), Decimal("0.20"), Decimal("0.10")) == Decimal("19200.00")
    assert appraisal.depreciated_value(price, Decimal(11), Decimal("0.20"), Decimal("0.10")) == Decimal("3000.00")


def test_income_value_is_an_annuity_of_the_annualised_revenue():
    # $9,000 net over 90 days = $36,500 a year; 4 years at 12 %: 36,500 × 3.0373493… = 110,863.25
    assert appraisal.income_value(Decimal("9000"), 90, Decimal("4"), Decimal("0.12")) == Decimal("110863.25")
    assert appraisal.income_value(Decimal("0"), 90, Decimal("4"), Decimal("0.12")) == Decimal("0.00")
    assert appraisal.income_value(Decimal("9000"), 90, Decimal("0"), Decimal("0.12")) == Decimal("0.00")


def test_the_value_is_the_lower_of_the_two():
    # a year-old 8×H100 server with a full 90-day record: $12,000 gross, less 6 % fee and insurance
    # and $0.25 × 8 × 24 × 90 = $4,320 of power and hosting = $6,960; × 365 / 90 = $28,226.67 a year;
    # over 4 years at 12 %: 28,226.67 × 3.0373493… = 85,734.26, below the 192,000.00 depreciation value
    inputs = appraisal.Inputs(
        purchase_price=Decimal("240000"),
        age_years=Decimal("1"),
        depreciation_rate=Decimal("0.20"),
        residual_floor=Decimal("0.10"),
        useful_life_years=Decimal("5"),
        discount_rate=Decimal("0.12"),
        gpu_count=8,
        trailing_gross_revenue=Decimal("12000"),
        trailing_days=90,
        history_days=90,
        rate=Decimal("2.40"),
        utilisation=Decimal("0.50"),
        platform_fee=Decimal("0.05"),
        insurance_rate=Decimal("0.01"),
        opex_per_gpu_hour=Decimal("0.25"),
    )
    result = appraisal.appraise(inputs)
    assert result.income_approach == "trailing" and result.annual_net_income == Decimal("28226.67")
    assert result.depreciated_value == Decimal("192000.00") and result.income_value == Decimal("85734.26")
    assert result.value == Decimal("85734.26") and result.remaining_life_years == 4


def _register(owner_user, server, **overrides):
    fields = {
        "owner": owner_user.owner_membership.company,
        "server": server,
        "purchase_price": Decimal("240000"),
        "purchase_date": TODAY - timedelta(days=365),
        "custodian": "Equinix FR5",
        "custody_receipt": "EQX-BAIL-0042",
        "insurer": "Lloyd's syndicate 2623",
        "policy_number": "GPU-77-1042",
        "coverage": Decimal("250000"),
        "insurance_expires": TODAY + timedelta(days=300),
        "today": TODAY,
    }
    fields.update(overrides)
    return collateral_register(**fields)


@pytest.mark.django_db
def test_bad_collateral_input_is_refused_and_nothing_is_written(owner):
    listing = make_listing(owner, gpu_count=8)
    with pytest.raises(ValidationError) as exc:
        _register(
            owner,
            listing.server,
            purchase_price=Decimal("0"),
            coverage=Decimal("-1"),
            insurance_expires=TODAY,
            purchase_date=TODAY + timedelta(days=1),
            policy_number=" ",
        )
    assert set(exc.value.message_dict) == {
        "purchase_price",
        "coverage",
        "insurance_expires",
        "purchase_date",
        "policy_number",
    }
    assert "lapsed" in exc.value.message_dict["insurance_expires"][0]
    with pytest.raises(PermissionDenied):
        _register(make_owner(), listing.server)
    assert Collateral.objects.count() == 0


@pytest.mark.django_db
def test_operator_approval_appraises_from_delivered_revenue(owner, renter, operator):
    listing = make_listing(owner, gpu_count=8, price="2.50")
    collateral = _register(owner, listing.server)
    with pytest.raises(PermissionDenied):
        collateral_approve(collateral=collateral, operator=owner)
    assert collateral.appraisals.count() == 0

    # the server earns: 8 GPUs × 10 h × $2.50 = $200 delivered
    booking = bookings.booking_pay(
        booking=bookings.booking_create(
            renter=renter, listing=listing, gpu_count=8, start=next_hour(1), end=next_hour(11)
        ),
        renter=renter,
    )
    bookings.booking_record_usage(
        booking=booking, key="k", interval_start=booking.start, interval_end=booking.end, gpu_seconds=8 * 36000
    )
    later = booking.end + timedelta(minutes=1)
    approved = collateral_approve(collateral=collateral, operator=operator, now=later)
    assert approved.approved_by == operator
    latest = approved.appraisals.latest()
    assert latest.trigger == "approval"
    assert latest.trailing_net_revenue == Decimal("190.000000")  # $200 less the 5 % platform fee
    # listed today, so the income is the market forward (no other H100 on the market: the $2.20
    # reference rate, below the listed $2.50; too little history: the 40 % default utilisation),
    # 2.20 × 0.40 × 0.94 − 0.25 = 0.5772 a GPU-hour × 8 × 8,760 = 40,450.18 a year, plus the $200
    # actually earned, net of fee and insurance, over the window: 200 × 0.94 × 365 / 90 = 762.44
    assert (latest.history_days, latest.income_approach, latest.trailing_gross_revenue) == (
        0,
        "forward",
        Decimal("200.000000"),
    )
    assert (latest.rate, latest.utilisation, latest.net_per_gpu_hour) == (
        Decimal("2.2000"),
        Decimal("0.4000"),
        Decimal("0.5772"),
    )
    assert latest.annual_net_income == Decimal("41212.62")
    remaining = Decimal(5) - latest.age_years
    factor = (1 - Decimal("1.12") ** -remaining) / Decimal("0.12")
    assert latest.income_value == (Decimal("41212.62") * factor).quantize(Decimal("0.01"))
    assert latest.value == latest.income_value < latest.depreciated_value  # income is the binding limit here
    assert appraisals_daily(now=later) == 1 and Appraisal.objects.filter(trigger="daily").count() == 1


@pytest.mark.django_db
def test_a_server_idle_on_the_market_for_the_whole_window_appraises_at_zero(owner):
    # its own record is all the evidence: nothing earned, $0.25 × 4 × 8,760 of power and hosting
    listing = make_listing(owner)
    now = timezone.now()
    Listing.objects.filter(pk=listing.pk).update(created_at=now - timedelta(days=120))
    collateral = _register(owner, listing.server)
    latest = appraisal_run(collateral=collateral, now=now)
    assert (latest.history_days, latest.income_approach, latest.trailing_weight) == (90, "trailing", Decimal("1"))
    assert latest.annual_net_income == Decimal("-8760.00") and latest.value == Decimal("0.00")


@pytest.mark.django_db
def test_a_new_server_is_valued_on_the_market_not_at_zero(owner):
    # the finding: a new server with no rental history used to appraise at $0.00
    collateral = _register(owner, make_listing(owner).server)
    latest = appraisal_run(collateral=collateral, now=timezone.now())
    assert latest.income_approach == "forward" and latest.value > 0
    # 4 GPUs × (2.00 listed, below the 2.20 reference, × 0.40 × 0.94 − 0.25 = 0.502) × 8,760
    assert latest.annual_net_income == Decimal("17590.08")
