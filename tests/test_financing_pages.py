"""Owner and lender financing pages: record collateral, apply, schedule, loan book, tape, charts."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from financing.models import Collateral, Loan
from financing.services.revenue import settlements_journal
from tests.factories import make_listing
from tests.financing_fixtures import T0, settle

pytestmark = pytest.mark.django_db


def test_owner_records_collateral_and_sees_bad_input_on_the_form(owner, client_as):
    listing = make_listing(owner, gpu_count=4)
    client = client_as(owner)
    url = reverse("financing:owner_financing")
    bad = client.post(
        url,
        {
            "action": "collateral",
            "c-server": listing.server.pk,
            "c-purchase_price": "50000",
            "c-purchase_date": "2026-01-01",
            "c-custodian": "DC",
            "c-custody_receipt": "R1",
            "c-insurer": "Ins",
            "c-policy_number": "P1",
            "c-coverage": "50000",
            "c-insurance_expires": "2020-01-01",
        },
    )
    assert bad.status_code == 400 and "insurance has lapsed" in bad.content.decode()
    assert not Collateral.objects.exists()
    ok = client.post(
        url,
        {
            "action": "collateral",
            "c-server": listing.server.pk,
            "c-purchase_price": "50000",
            "c-purchase_date": "2026-01-01",
            "c-custodian": "DC",
            "c-custody_receipt": "R1",
            "c-insurer": "Ins",
            "c-policy_number": "P1",
            "c-coverage": "50000",
            "c-insurance_expires": "2030-01-01",
        },
    )
    assert ok.status_code == 302 and Collateral.objects.get().server == listing.server
    assert "awaiting review" in client.get(url).content.decode()


def test_owner_sees_the_schedule_and_lender_the_book_tape_and_charts(loan, renter, owner, lender, client_as):
    settle(loan, renter, "4000.00", T0 + timedelta(days=10))
    settlements_journal()
    # owner: the loan page with its schedule, next instalment and repayments
    page = client_as(owner).get(reverse("financing:owner_loan", args=[loan.public_id]))
    html = page.content.decode()
    assert page.status_code == 200 and html.count("1,083.10") >= 11 and "<svg" in html
    assert "settlement:" in html  # the revenue entry that paid it
    # another owner cannot open it; a renter cannot open the loan book
    from tests.factories import make_owner, make_renter

    assert client_as(make_owner()).get(reverse("financing:owner_loan", args=[loan.public_id])).status_code == 404
    assert client_as(make_renter()).get(reverse("financing:loan_book")).status_code == 403
    # lender: the book, the tape, the loan with its flow chart, the collateral page
    lender_client = client_as(lender)
    assert loan.collateral.server.hostname in lender_client.get(reverse("financing:loan_book")).content.decode()
    tape = list(csv.DictReader(io.StringIO(lender_client.get(reverse("financing:loan_tape")).content.decode())))
    assert len(tape) == 1 and tape[0]["status"] == "active"
    # instalment 1's principal and the sweep (DSCR below 1.25) repaid, see test_waterfall_financed
    assert Decimal(tape[0]["outstanding"]) == Decimal("12000") - Decimal("2321.892466")
    detail = lender_client.get(reverse("financing:lender_loan", args=[loan.public_id])).content.decode()
    # rent reached the lenders: interest and principal (the reserve was held back at origination)
    assert "Renters paid $4,000.00" in detail and "Principal (incl. sweep) $2,321.89" in detail
    assert "Interest $49.32" in detail and "$3,249.30" in detail
    collateral = lender_client.get(reverse("financing:collateral", args=[loan.collateral.pk]))
    assert collateral.status_code == 200 and "Equinix FR5" in collateral.content.decode()


def test_owner_applies_from_the_page_within_the_live_maximum(loan, owner, operator, client_as):
    # the fixture's collateral already secures a loan: it is not offered again
    page = client_as(owner).get(reverse("financing:owner_financing"))
    assert page.status_code == 200
    assert list(page.context["loan_form"].fields["collateral"].queryset) == []
    assert Loan.objects.count() == 1


def test_the_live_maximum_is_shown_only_where_a_loan_is_possible(owner, operator, client_as):
    from tests.financing_fixtures import approved_collateral

    free = approved_collateral(owner, operator, value="40000", purchase_price="50000", at=T0, policy="P-free")
    page = client_as(owner).get(reverse("financing:owner_financing"))
    rows = {c.pk: maximum for c, _, maximum in page.context["records"]}
    assert rows[free.pk] == Decimal("30000.00")  # 75 % of $40,000
    Collateral.objects.filter(pk=free.pk).update(lien=Collateral.Lien.PLEDGED)
    page = client_as(owner).get(reverse("financing:owner_financing"))
    assert {c.pk: maximum for c, _, maximum in page.context["records"]}[free.pk] is None
