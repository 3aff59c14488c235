"""Underwriting new hardware: the forward income value from the platform's own market,
the projected DSCR at application, and what limits the owner's maximum.

The worked example: an owner buys a new 8×H100 server for $240,000 (183 days
before ``NOW``) and lists it at $2.50 a GPU-hour; it has no rental history.
Another owner has three 2×H100 servers listed at $2.00, $2.40 and $2.80 for the
whole 90-day window, booked for 6,480 of their 12,960 GPU-hours.
"""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from financing import appraisal, schedules
from financing.models import Instalment, JournalEntry, Loan, Posting
from financing.selectors.ledger import balances
from financing.selectors.loans import borrowing_limit, loan_warnings
from financing.services.collateral import collateral_approve, collateral_register
from financing.services.loans import loan_apply, loan_approve, loan_max_amount
from financing.services.revenue import settlements_journal
from marketplace.models import Listing
from marketplace.services import bookings
from tests.api_errors import field_errors
from tests.factories import make_listing
from tests.financing_fixtures import fund_vault, settle

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)

# The worked example, by hand (defaults: fee 5 %, insurance 1 %, power and hosting $0.25 per
# GPU-hour, H100 depreciation 20 % a year, 5-year life, 12 % discount, 75 % LTV, 15 % APR):
AGE = Decimal("0.5010")  # 183 / 365.25
DEPRECIATED = Decimal("214614.63")  # 240,000 × 0.8^0.5010
MARKET_RATE = Decimal("2.40")  # median of 2.00, 2.40, 2.80 (below the server's own $2.50)
UTILISATION = Decimal("0.50")  # 6,480 / 12,960 GPU-hours, under the 60 % cap
NET_PER_GPU_HOUR = Decimal("0.878")  # 2.40 × 0.50 × (1 − 0.05 − 0.01) − 0.25 = 1.128 − 0.25
ANNUAL = Decimal("61530.24")  # 0.878 × 8 GPUs × 8,760 hours
FACTOR = (1 - Decimal("1.12") ** -(5 - AGE)) / Decimal("0.12")  # 4.4990 years at 12 %: 3.3285316…
FORWARD_VALUE = Decimal("204805.35")  # 61,530.24 × 3.3285316…
LTV_MAXIMUM = Decimal("153604.01")  # 75 % of 204,805.35, rounded down
MONTHLY = Decimal("5127.52")  # 61,530.24 / 12
# 5,127.52 × (1 − 1.0125^−36) / 0.0125 = 147,914.94, whose last instalment would be $5,127.53:
DSCR_MAXIMUM = Decimal("147914.93")


def _book(renter, listing, start: datetime, days: int) -> None:
    booking = bookings.booking_create(
        renter=renter, listing=listing, gpu_count=2, start=start, end=start + days * DAY, now=start
    )
    bookings.booking_pay(booking=booking, renter=renter, now=start)


def h100_market(other_owner, renter) -> list[Listing]:
    """Three 2×H100 listings by another owner, listed 120 days before NOW, booked for half their time
    in the window: 4 × (2 GPUs × 720 h) + 2 GPUs × 360 h = 6,480 of 3 × 2 × 2,160 = 12,960 GPU-hours."""
    listings = [make_listing(other_owner, gpu_count=2, price=price) for price in ("2.00", "2.40", "2.80")]
    Listing.objects.filter(pk__in=[x.pk for x in listings]).update(created_at=NOW - 120 * DAY)
    a, b, c = listings
    _book(renter, a, NOW - 80 * DAY, 30)
    _book(renter, a, NOW - 50 * DAY, 30)
    _book(renter, b, NOW - 80 * DAY, 30)
    _book(renter, b, NOW - 40 * DAY, 15)
    _book(renter, c, NOW - 60 * DAY, 30)
    return listings


def new_server(owner, operator, *, model: str = "H100 80GB", price: str = "2.50"):
    """A new 8-GPU server bought 183 days ago for $240,000, listed today, approved and appraised at NOW."""
    listing = make_listing(owner, gpu_count=8, price=price, model=model)
    Listing.objects.filter(pk=listing.pk).update(created_at=NOW)
    record = collateral_register(
        owner=owner.owner_membership.company,
        server=listing.server,
        purchase_price=Decimal("240000"),
        purchase_date=NOW.date() - 183 * DAY,
        custodian="Equinix FR5",
        custody_receipt="EQX-BAIL-0042",
        insurer="Lloyd's syndicate 2623",
        policy_number="GPU-77-1042",
        coverage=Decimal("240000"),
        insurance_expires=date(2028, 1, 1),
        today=NOW.date(),
    )
    return collateral_approve(collateral=record, operator=operator, now=NOW)


def written() -> tuple[int, int, int]:
    return Loan.objects.count(), Instalment.objects.count(), JournalEntry.objects.count()


def test_worked_example_a_new_8xh100_is_valued_on_the_market_forward_borrows_and_pays_its_first_instalment(
    owner, other_owner, renter, operator
):
    # given the H100 market and a new server with no rental history
    h100_market(other_owner, renter)

    # when an operator approves it (the first appraisal)
    collateral = new_server(owner, operator)

    # then the appraisal stores every input: the hardware, the market, the costs
    a = collateral.appraisals.get()
    assert (a.gpu_model, a.gpu_count, a.age_years) == ("H100 80GB", 8, AGE)
    assert (a.depreciation_rate, a.depreciation_rate_source) == (Decimal("0.2000"), "H100 rate")
    assert (a.market_rate, a.market_listings, a.listed_rate, a.rate) == (
        MARKET_RATE,
        3,
        Decimal("2.50"),
        MARKET_RATE,
    )
    assert a.market_rate_source == "median of 3 live H100 80GB listings by other owners"
    assert (a.market_booked_gpu_hours, a.market_available_gpu_hours) == (Decimal("6480.00"), Decimal("12960.00"))
    assert (a.trailing_utilisation, a.utilisation) == (Decimal("0.5000"), UTILISATION)
    assert a.utilisation_source == (
        "the platform's trailing figure (6,480 of 12,960 H100 80GB GPU-hours booked in the last 90 days)"
    )
    assert (a.platform_fee, a.insurance_rate, a.opex_per_gpu_hour) == (
        Decimal("0.0500"),
        Decimal("0.0100"),
        Decimal("0.2500"),
    )
    assert a.net_per_gpu_hour == NET_PER_GPU_HOUR
    assert (a.history_days, a.trailing_weight, a.trailing_gross_revenue, a.income_approach) == (
        0,
        Decimal("0.0000"),
        Decimal("0.000000"),
        "forward",
    )
    assert a.annual_net_income == ANNUAL and a.remaining_life_years == Decimal("4.4990")
    assert (ANNUAL * FACTOR).quantize(Decimal("0.01")) == FORWARD_VALUE
    assert (a.depreciated_value, a.forward_income_value, a.income_value, a.value) == (
        DEPRECIATED,
        FORWARD_VALUE,
        FORWARD_VALUE,
        FORWARD_VALUE,  # the lower of the two: the income value binds
    )

    # and the maximum is the DSCR limit, below the LTV limit
    limit = borrowing_limit(collateral)
    assert (limit.ltv_maximum, limit.monthly_income, limit.dscr_maximum) == (LTV_MAXIMUM, MONTHLY, DSCR_MAXIMUM)
    assert (limit.maximum, limit.binding, limit.valuation) == (DSCR_MAXIMUM, "dscr", "income")
    assert loan_max_amount(collateral) == DSCR_MAXIMUM

    # when the owner applies for $100,000 over 36 months: 100,000 × 0.0125 / (1 − 1.0125^−36) = $3,466.53
    # a month, and the last instalment squares the cents that rounding left: $3,466.70, the largest
    loan = loan_apply(
        owner=owner.owner_membership.company, collateral=collateral, amount=Decimal("100000"), tenor_months=36, now=NOW
    )

    # then the loan is applied for, with its projection on the largest payment: 5,127.52 / 3,466.70 = 1.4790…
    assert loan.status == Loan.Status.APPLIED and loan.appraisal == a
    assert (loan.projected_monthly_income, loan.scheduled_payment, loan.projected_dscr) == (
        MONTHLY,
        Decimal("3466.70"),
        Decimal("1.4790"),
    )
    assert loan.ltv_at_origination == Decimal("0.4883")  # 100,000 / 204,805.35
    assert loan_warnings(loan) == []

    # when lenders have put $150,000 in the vault and an operator approves it
    fund_vault(Decimal("150000.00"))
    loan = loan_approve(loan=loan, operator=operator, now=NOW)

    # then three payments are held back for the reserve and the owner receives the rest
    books = balances()
    assert loan.reserve_funded == 3 * Decimal("3466.53") == Decimal("10399.59")
    assert books[f"principal:{loan.pk}"] == Decimal("100000.00")
    assert -books[f"reserve:{loan.pk}"] == Decimal("10399.59")
    first = loan.instalments.get(number=1)
    assert (first.payment, first.interest, first.principal) == (
        Decimal("3466.53"),
        Decimal("1250.00"),  # 100,000 × 15 % / 12
        Decimal("2216.53"),
    )

    # when the server's first rent, $6,000 for usage that ended 20 days in, reaches the waterfall
    at = NOW + timedelta(days=20)
    settle(loan, renter, "6000.00", at)
    settlements_journal()

    # then the fee (5 %) and insurance (1 %) come first, then 20 days of interest, then the
    # first instalment's principal; the reserve is full; DSCR 5,700 / 10,399.59 < 1.25, so
    # half of what is left sweeps principal and the owner has the rest
    books = balances()
    interest = (Decimal("100000") * Decimal("0.15") * 20 / 365).quantize(Decimal("0.000001"))
    assert interest == Decimal("821.917808")
    left = Decimal("6000") - Decimal("300") - Decimal("60") - interest - Decimal("2216.53")
    sweep = (left / 2).quantize(Decimal("0.000001"))
    assert books[f"interest:{loan.pk}"] == 0
    assert books[f"principal:{loan.pk}"] == Decimal("100000") - Decimal("2216.53") - sweep
    assert -books[f"reserve:{loan.pk}"] == Decimal("10399.59")
    fee = (interest * Decimal("0.10")).quantize(Decimal("0.000001"))
    to_vault = Posting.objects.filter(account__code="vault_cash", line="to_vault_interest").get().amount
    assert to_vault == interest - fee  # GPU rent reaches lenders: the interest, less the protocol's 10 %
    assert books[f"owner_payable:{owner.owner_membership.company.pk}"] == -(left - sweep)
    assert sum(books.values()) == 0


def test_without_a_listing_of_the_model_the_reference_rate_is_used_and_the_source_says_so(owner, operator):
    # given no other H100 on the market: the reference rate ($2.20, below the listed $2.50) and,
    # with no history to measure, the default utilisation (40 %)
    collateral = new_server(owner, operator)

    a = collateral.appraisals.get()
    assert (a.market_rate, a.rate, a.market_listings) == (Decimal("2.2000"), Decimal("2.2000"), 0)
    assert a.market_rate_source == "reference rate: no live H100 80GB listing by another owner on the market"
    assert (a.trailing_utilisation, a.utilisation) == (None, Decimal("0.4000"))
    assert a.utilisation_source == (
        "default: H100 80GB had 0 GPU-hours on the market in the last 90 days, fewer than the 2,160 needed to measure"
    )
    # 2.20 × 0.40 × 0.94 − 0.25 = 0.5772 a GPU-hour; × 8 × 8,760 = 40,450.176 a year
    assert a.net_per_gpu_hour == Decimal("0.5772") and a.annual_net_income == Decimal("40450.18")
    assert a.income_value == (Decimal("40450.18") * FACTOR).quantize(Decimal("0.01")) == Decimal("134639.71")
    assert a.value == a.income_value


def test_a_model_with_neither_market_nor_reference_rate_is_worth_nothing_and_the_page_says_why(
    owner, operator, client_as
):
    collateral = new_server(owner, operator, model="V100 16GB")

    a = collateral.appraisals.get()
    assert a.depreciation_rate_source == "default rate (V100 16GB is not in the table)"
    assert a.market_rate == 0 and a.market_rate_source.startswith("none: no live V100 16GB listing")
    assert (a.income_value, a.value) == (Decimal("0.00"), Decimal("0.00"))
    html = client_as(owner).get(reverse("financing:owner_financing")).content.decode()
    assert "you can borrow $0.00 over 36 months" in html
    assert "Income value $0.00: there is no market rate for V100 16GB" in html


def test_a_projected_dscr_below_one_is_refused_with_a_field_error_and_nothing_written(
    owner, other_owner, renter, operator
):
    h100_market(other_owner, renter)
    collateral = new_server(owner, operator)
    before = written()

    # $150,000 over 36 months is within the LTV limit, but costs $5,199.80 a month against $5,127.52
    with pytest.raises(ValidationError) as exc:
        loan_apply(
            owner=owner.owner_membership.company,
            collateral=collateral,
            amount=Decimal("150000"),
            tenor_months=36,
            now=NOW,
        )
    assert exc.value.message_dict == {
        "amount": [
            "Projected DSCR 0.98 is below 1.00: the server's projected net income of $5,127.52 a month does not "
            "cover the $5,199.80 payment. At most $147,914.93 can be borrowed over 36 months on this schedule."
        ]
    }
    assert written() == before
    # the DSCR limit follows the tenor and the schedule: over 12 months, fixed principal, less
    assert loan_max_amount(collateral, tenor_months=12, kind=Loan.Kind.FIXED_PRINCIPAL) == Decimal("53504.57")


def test_a_thin_projected_dscr_is_warned_and_the_loan_still_applied_for(owner, other_owner, renter, operator):
    h100_market(other_owner, renter)
    collateral = new_server(owner, operator)

    # $130,000 over 36 months: $4,506.49 a month, the last $4,506.62; covered 5,127.52 / 4,506.62 = 1.1377… times
    loan = loan_apply(
        owner=owner.owner_membership.company, collateral=collateral, amount=Decimal("130000"), tenor_months=36, now=NOW
    )
    assert loan.status == Loan.Status.APPLIED and loan.projected_dscr == Decimal("1.1377")
    assert loan_warnings(loan) == [
        "Projected DSCR 1.13 is below 1.25: the server's projected net income of $5,127.52 a month covers the "
        "$4,506.62 payment with little to spare; a weak month draws on the reserve and revenue is swept to repay "
        "early."
    ]


@pytest.mark.parametrize("amount", ["0.93", "999.99"])
def test_a_principal_below_the_minimum_is_refused(owner, operator, amount):
    collateral = new_server(owner, operator)
    before = written()
    with pytest.raises(ValidationError) as exc:
        loan_apply(
            owner=owner.owner_membership.company,
            collateral=collateral,
            amount=Decimal(amount),
            tenor_months=36,
            now=NOW,
        )
    assert exc.value.message_dict["amount"] == [
        "Borrow at least $1,000.00: below that a schedule's payments are too small to service."
    ]
    assert written() == before


def test_the_api_refuses_a_dscr_below_one_and_warns_a_thin_one(owner, other_owner, renter, operator, api_as):
    h100_market(other_owner, renter)
    collateral = new_server(owner, operator)
    api = api_as(owner)
    url = reverse("api:owner-loans")
    before = written()

    refused = api.post(url, {"collateral": collateral.pk, "amount": "150000.00", "tenor_months": 36}, format="json")
    assert refused.status_code == 400
    assert field_errors(refused)["amount"][0].startswith("Projected DSCR 0.98 is below 1.00")
    assert written() == before
    tiny = api.post(url, {"collateral": collateral.pk, "amount": "0.93", "tenor_months": 36}, format="json")
    assert tiny.status_code == 400 and field_errors(tiny)["amount"][0].startswith("Borrow at least $1,000.00")

    limit = api.get(reverse("api:collateral-limit", args=[collateral.pk])).json()
    assert (limit["maximum"], limit["binding"], limit["ltv_maximum"]) == ("147914.930000", "dscr", "153604.010000")

    taken = api.post(url, {"collateral": collateral.pk, "amount": "130000.00", "tenor_months": 36}, format="json")
    assert taken.status_code == 201
    body = taken.json()
    assert (body["status"], body["projected_dscr"], body["scheduled_payment"]) == ("applied", "1.1377", "4506.62")
    assert body["warnings"][0].startswith("Projected DSCR 1.13 is below 1.25")


def test_the_owners_page_shows_what_limits_the_maximum_and_why(owner, other_owner, renter, operator, client_as):
    h100_market(other_owner, renter)
    collateral = new_server(owner, operator)
    client = client_as(owner)
    url = reverse("financing:owner_financing")

    page = client.get(url)
    html = page.content.decode()
    assert f'id="limit-{collateral.pk}"' in html
    for shown in (
        'Depreciation value</th><td class="num">$214,614.63',
        'Income value</th><td class="num">$204,805.35',
        "market forward: no rental record yet",
        "8 × H100 80GB at $2.40/GPU-hour (median of 3 live H100 80GB listings by other owners)",
        "× 50% utilisation",
        "= $0.8780 net per GPU-hour",
        "over the remaining 4.50 years at 12%",
        "the lower of the two: the income value binds",
        'LTV limit</th><td class="num">$153,604.01',
        'DSCR limit</th><td class="num">$147,914.93',
        "$5,127.52 a month of projected net income",
        "The DSCR limit binds: $147,914.93, below the LTV limit.",
    ):
        assert shown in html, shown
    assert {c.pk: maximum for c, _, maximum in page.context["records"]}[collateral.pk] == DSCR_MAXIMUM

    # and an application with a thin DSCR is taken with the warning on the page
    applied = client.post(
        url,
        {
            "action": "loan",
            "l-collateral": collateral.pk,
            "l-amount": "130000",
            "l-tenor_months": 36,
            "l-kind": "fixed_payment",
        },
        follow=True,
    )
    assert applied.status_code == 200 and "Projected DSCR 1.13 is below 1.25" in applied.content.decode()
    # one below 1.0 is refused on the form, with nothing written
    Loan.objects.all().delete()
    refused = client.post(
        url,
        {
            "action": "loan",
            "l-collateral": collateral.pk,
            "l-amount": "150000",
            "l-tenor_months": 36,
            "l-kind": "fixed_payment",
        },
    )
    assert refused.status_code == 400 and "Projected DSCR 0.98 is below 1.00" in refused.content.decode()
    assert Loan.objects.count() == 0


def test_the_blend_counts_the_servers_own_days_and_fills_the_rest_from_the_market():
    # 30 of 90 days on the market, $3,000 gross, 8 GPUs at the forward 0.878 net a GPU-hour:
    # actual 3,000 × 0.94 × 365 / 90 = 11,436.67; less 30/90 of a year's opex (0.25 × 8 × 8,760 = 17,520) = 5,840;
    # plus 60/90 of the forward 61,530.24 = 41,020.16 → 46,616.83 a year
    inputs = appraisal.Inputs(
        purchase_price=Decimal("240000"),
        age_years=Decimal("1"),
        depreciation_rate=Decimal("0.20"),
        residual_floor=Decimal("0.10"),
        useful_life_years=Decimal("5"),
        discount_rate=Decimal("0.12"),
        gpu_count=8,
        trailing_gross_revenue=Decimal("3000"),
        trailing_days=90,
        history_days=30,
        rate=Decimal("2.40"),
        utilisation=Decimal("0.50"),
        platform_fee=Decimal("0.05"),
        insurance_rate=Decimal("0.01"),
        opex_per_gpu_hour=Decimal("0.25"),
    )
    result = appraisal.appraise(inputs)
    assert result.income_approach == "blend" and result.trailing_weight == Decimal("0.3333")
    assert result.annual_net_income == Decimal("46616.83")  # 11,436.67 − 5,840 + 41,020.16
    # the same as 1/3 of the server's own year (3,000 × 0.94 × 365 / 30 − 17,520 = 16,790) and 2/3 of the forward
    assert result.trailing_annual_income == Decimal("16790")
    assert (Decimal("16790") / 3 + ANNUAL * 2 / 3).quantize(Decimal("0.01")) == Decimal("46616.83")


def test_utilisation_above_the_cap_is_capped_and_thin_history_takes_the_default():
    assert appraisal.utilisation_assumption(
        model="H100 80GB",
        booked_gpu_hours=Decimal("9000"),
        available_gpu_hours=Decimal("10000"),
        minimum_gpu_hours=Decimal("2160"),
        cap=Decimal("0.60"),
        default=Decimal("0.40"),
        days=90,
    ) == (
        Decimal("0.9000"),
        Decimal("0.60"),
        "cap: the platform's 90.00% (9,000 of 10,000 H100 80GB GPU-hours booked in the last 90 days) is above "
        "the 60% cap",
    )
    trailing, used, source = appraisal.utilisation_assumption(
        model="H100 80GB",
        booked_gpu_hours=Decimal("0"),
        available_gpu_hours=Decimal("100"),
        minimum_gpu_hours=Decimal("2160"),
        cap=Decimal("0.60"),
        default=Decimal("0.40"),
        days=90,
    )
    assert (trailing, used) == (None, Decimal("0.40")) and source.startswith("default: H100 80GB had 100 GPU-hours")


def test_depreciation_is_per_gpu_model():
    rates = {"H100": Decimal("0.20"), "A100": Decimal("0.15")}
    assert appraisal.model_rate("A100 80GB", rates, Decimal("0.20")) == (Decimal("0.15"), "A100 rate")
    assert appraisal.model_rate("MI300X", rates, Decimal("0.20")) == (
        Decimal("0.20"),
        "default rate (MI300X is not in the table)",
    )
    # a year old: 240,000 × 0.85 = 204,000 for an A100 server, × 0.80 = 192,000 for an H100 one
    assert appraisal.depreciated_value(Decimal("240000"), Decimal(1), Decimal("0.15"), Decimal("0.10")) == Decimal(
        "204000.00"
    )


def test_max_principal_is_the_largest_whose_every_payment_the_income_covers():
    for kind in (schedules.FIXED_PAYMENT, schedules.FIXED_PRINCIPAL):
        for months in (12, 24, 36):
            p = schedules.max_principal(MONTHLY, Decimal("0.15"), months, kind)
            assert schedules.largest_payment(p, Decimal("0.15"), months, kind) <= MONTHLY
            assert schedules.largest_payment(p + Decimal("0.01"), Decimal("0.15"), months, kind) > MONTHLY
    assert schedules.max_principal(MONTHLY, Decimal("0.15"), 36) == DSCR_MAXIMUM
    assert schedules.max_principal(Decimal("0"), Decimal("0.15"), 36) == Decimal("0.00")


def test_an_approval_is_refused_when_the_latest_appraisal_no_longer_covers_the_payment(
    owner, other_owner, renter, operator
):
    h100_market(other_owner, renter)
    collateral = new_server(owner, operator)
    loan = loan_apply(
        owner=owner.owner_membership.company, collateral=collateral, amount=Decimal("130000"), tenor_months=36, now=NOW
    )
    # a later appraisal halves the projected income: $2,563.76 a month covers at most
    # 2,563.76 × (1 − 1.0125^−36) / 0.0125 = 73,957.47 (73,957.45 once the schedule's cent rounding is allowed for)
    later = collateral.appraisals.get()
    later.pk, later.as_of, later.annual_net_income = None, NOW + DAY, ANNUAL / 2
    later.save()
    before = written()
    with pytest.raises(ValidationError) as exc:
        loan_approve(loan=loan, operator=operator, now=NOW)
    assert exc.value.message_dict["collateral"] == [
        "The collateral's latest appraisal no longer supports this amount: at most $73,957.45 (the DSCR limit)."
    ]
    assert written() == before
