"""Collateral records and appraisals: worked figures, bad input, operator approval."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from financing import appraisal
from financing.models import Appraisal, Collateral
from financing.services.collateral import appraisal_run, appraisals_daily, collateral_approve, collateral_register
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
    inputs = appraisal.Inputs(
        purchase_price=Decimal("240000"),
        age_years=Decimal("1"),
        depreciation_rate=Decimal("0.20"),
        residual_floor=Decimal("0.10"),
        trailing_net_revenue=Decimal("9000"),
        trailing_days=90,
        useful_life_years=Decimal("5"),
        discount_rate=Decimal("0.12"),
    )
    result = appraisal.appraise(inputs)
    assert result.depreciated_value == Decimal("192000.00") and result.income_value == Decimal("110863.25")
    assert result.value == Decimal("110863.25") and result.remaining_life_years == 4


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
    expected = appraisal.appraise(
        appraisal.Inputs(
            purchase_price=Decimal("240000"),
            age_years=latest.age_years,
            depreciation_rate=Decimal("0.20"),
            residual_floor=Decimal("0.10"),
            trailing_net_revenue=Decimal("190"),
            trailing_days=90,
            useful_life_years=Decimal("5"),
            discount_rate=Decimal("0.12"),
        )
    )
    assert latest.value == expected.value == expected.income_value  # income is the binding limit here
    assert appraisals_daily(now=later) == 1 and Appraisal.objects.filter(trigger="daily").count() == 1


@pytest.mark.django_db
def test_an_unearning_server_appraises_at_zero(owner):
    collateral = _register(owner, make_listing(owner).server)
    assert appraisal_run(collateral=collateral, now=timezone.now()).value == Decimal("0.00")
