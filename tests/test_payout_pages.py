"""Payout pages: owners see their own statements and payouts (never another company's),
only an administrator changes payout details (validated: IBAN, BIC, VAT id), operators run
payouts, download the SEPA file and mark it sent."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts import services as account_services
from accounts.models import OwnerCompany
from financing.models import JournalEntry, Payout, PayoutRun, SepaFile
from financing.services import payouts
from tests.factories import UserFactory, make_owner
from tests.test_payouts import BIC, IBAN, earning_company

pytestmark = pytest.mark.django_db

VALID = {
    "action": "company",
    "name": "Ada Compute GmbH",
    "vat_id": "DE 136 695 976",
    "address_line1": "Hauptstr. 1",
    "address_line2": "10115 Berlin",
    "country": "de",
    "payout_account_holder": "Ada Compute GmbH",
    "payout_iban": "de89 3704 0044 0532 0130 00",
    "payout_bic": "cobadeffxxx",
    "payout_wallet_address": "",
    "payout_rail": "sepa",
}


def member_of(company: OwnerCompany):
    """A plain member of ``company``, joined through an invitation as users do."""
    admin = company.memberships.get().user
    user = UserFactory()
    invitation = account_services.company_invitation_send(
        company=company, invited_by=admin, email=user.email, link="http://testserver/i/"
    )
    account_services.company_invitation_accept(token=invitation.token, user=user)
    return user


def run_week() -> PayoutRun:
    return payouts.payouts_weekly(now=timezone.now() + timedelta(days=7))


# --- The owner's page ----------------------------------------------------------------------------


def test_owners_and_members_see_their_statement_and_payouts_not_another_companys(renter, client_as, api_as):
    company, _ = earning_company(renter, "1000.00", payout_iban=IBAN)
    other, _ = earning_company(renter, "1000.00", payout_iban=IBAN)
    run = run_week()
    mine, theirs = Payout.objects.get(company=company), Payout.objects.get(company=other)
    admin = company.memberships.get().user

    for user in (admin, member_of(company)):
        page = client_as(user).get(reverse("financing:owner_payouts"))
        assert page.status_code == 200
        html = page.content.decode()
        assert f'id="payout-{mine.pk}"' in html and f'id="payout-{theirs.pk}"' not in html
        assert "950.00" in html and "874.00" in html  # USD, and EUR at 0.92
        assert "Download CSV" in html

    csv = client_as(admin).get(reverse("financing:owner_statement_csv", args=[run.pk]))
    assert csv.status_code == 200 and csv["Content-Disposition"].startswith("attachment;")
    rows = csv.content.decode().splitlines()
    assert rows[0].startswith("Server,Gross rent,Platform fee")
    assert rows[2] == "Total,1000.000000,50.000000,0.000000,0.000000,0.000000,950.000000,0.000000,0.000000,950.000000"
    assert rows[-4:] == [
        "Owed at the start,0.000000",
        "Earned in the period,950.000000",
        "Paid in this run,950.000000",
        "Carried forward,0.000000",
    ]

    # another company's payout, and a run from before the company earned anything: 404
    api = api_as(admin)
    assert api.get(reverse("api:owner-payout", args=[theirs.pk])).status_code == 404
    ok = api.get(reverse("api:owner-payout", args=[mine.pk]))
    assert ok.status_code == 200 and ok.json()["amount"] == "950.000000" and ok.json()["rail"] == "sepa"
    assert [p["id"] for p in api.get(reverse("api:owner-payouts")).json()] == [mine.pk]
    statement = api.get(reverse("api:owner-payout-statement", args=[run.pk])).json()
    assert statement["total"]["net"] == "950.000000" and statement["paid"] == "950.000000"
    late = make_owner()
    assert client_as(late).get(reverse("financing:owner_statement_csv", args=[run.pk])).status_code == 404
    assert api_as(late).get(reverse("api:owner-payout-statement", args=[run.pk])).status_code == 404


def test_a_renter_cannot_open_the_owner_or_operator_payout_pages(renter, client_as):
    client = client_as(renter)
    assert client.get(reverse("financing:owner_payouts")).status_code == 403
    assert client.get(reverse("financing:operator_payouts")).status_code == 403
    assert client.post(reverse("financing:operator_payout_run")).status_code == 403
    assert not PayoutRun.objects.exists()


# --- The company form ------------------------------------------------------------------------------


def test_an_administrator_saves_valid_payout_details_normalised(owner, client_as):
    response = client_as(owner).post(reverse("accounts:company"), VALID)
    assert response.status_code == 302
    company = OwnerCompany.objects.get(pk=owner.owner_membership.company.pk)
    assert (company.payout_iban, company.payout_bic, company.vat_id, company.country) == (
        IBAN,
        BIC,
        "DE136695976",
        "DE",
    )
    assert (company.address_line1, company.address_line2, company.payout_rail) == (
        "Hauptstr. 1",
        "10115 Berlin",
        "sepa",
    )


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"payout_iban": "DE89370400440532013001"}, "payout_iban", "checksum"),
        ({"payout_iban": "DE8937040044053201300"}, "payout_iban", "length"),
        ({"payout_bic": "COBA"}, "payout_bic", "not a valid BIC"),
        ({"payout_bic": "ABNANL2A"}, "payout_bic", "in NL; the IBAN is of an account in DE"),
        ({"vat_id": "DE136695977"}, "vat_id", "not a valid EU VAT id"),
        ({"country": "D1"}, "country", "two-letter"),
    ],
)
def test_the_company_form_rejects_bad_payout_details_with_field_errors(owner, client_as, changes, field, message):
    company = owner.owner_membership.company
    before = OwnerCompany.objects.filter(pk=company.pk).values().get()

    response = client_as(owner).post(reverse("accounts:company"), VALID | changes)

    assert response.status_code == 400
    errors = response.context["form"].errors
    assert list(errors) == [field] and message in " ".join(errors[field])
    assert OwnerCompany.objects.filter(pk=company.pk).values().get() == before


def test_the_service_refuses_an_invalid_iban_too(owner):
    from django.core.exceptions import ValidationError

    company = owner.owner_membership.company
    with pytest.raises(ValidationError) as refused:
        account_services.owner_company_update(
            company=company, by=owner, name=company.name, payout_iban="DE89370400440532013001"
        )
    assert "payout_iban" in refused.value.message_dict
    assert OwnerCompany.objects.get(pk=company.pk).payout_iban == ""


def test_a_member_cannot_change_payout_details(owner, client_as):
    company = owner.owner_membership.company
    member = member_of(company)
    page = client_as(member).get(reverse("accounts:company"))
    assert page.status_code == 200 and "Only an administrator" in page.content.decode()
    response = client_as(member).post(reverse("accounts:company"), VALID)
    assert response.status_code == 403
    assert OwnerCompany.objects.get(pk=company.pk).payout_iban == ""


# --- The operator's page ----------------------------------------------------------------------------


def test_an_operator_runs_payouts_downloads_the_sepa_file_and_marks_it_sent(renter, operator, client_as):
    sepa_company, _ = earning_company(renter, "1000.00", payout_iban=IBAN, payout_bic=BIC)
    withheld_company, _ = earning_company(renter, "100.00", payout_iban="DE89370400440532013001")
    client = client_as(operator)

    response = client.post(reverse("financing:operator_payout_run"))
    assert response.status_code == 302
    run = PayoutRun.objects.get()
    assert (run.trigger, run.created_by, run.status) == ("operator", operator, "done")
    page = client.get(response["Location"])
    html = page.content.decode()
    assert page.status_code == 200
    failed = Payout.objects.get(company=withheld_company)
    assert failed.status == "failed" and "The stored IBAN is refused" in html

    sepa_file = SepaFile.objects.get()
    download = client.get(reverse("financing:operator_sepa_download", args=[sepa_file.pk]))
    assert download.status_code == 200 and download["Content-Type"].startswith("application/xml")
    assert download["Content-Disposition"] == f'attachment; filename="pain001-{sepa_file.message_id}.xml"'
    assert download.content.decode() == sepa_file.xml and IBAN in sepa_file.xml

    assert client.post(reverse("financing:operator_sepa_mark_sent", args=[sepa_file.pk])).status_code == 302
    sepa_file.refresh_from_db()
    assert sepa_file.sent_by == operator and sepa_file.sent_at is not None
    assert Payout.objects.get(company=sepa_company).status == "confirmed"
    assert JournalEntry.objects.filter(key=f"sepa:sent:{sepa_file.pk}").exists()
    # a second run now finds nothing new to pay
    client.post(reverse("financing:operator_payout_run"))
    assert Payout.objects.filter(status__in=["sent", "confirmed"]).count() == 1
    assert Payout.objects.get(company=sepa_company).amount == Decimal("950.00")


def test_the_hourly_beat_entry_creates_the_last_complete_weeks_run_once(renter):
    from django.conf import settings
    from django.utils.module_loading import import_string

    entry = settings.CELERY_BEAT_SCHEDULE["financing-payouts-weekly"]
    assert (entry["task"], entry["schedule"]) == ("financing.tasks.payouts_weekly", 3600.0)
    earning_company(renter, "1000.00", payout_iban=IBAN)  # journaled now: this week, not the last one

    first, second = import_string(entry["task"]).run(), import_string(entry["task"]).run()

    run = PayoutRun.objects.get()
    monday = payouts.week_start(timezone.now())
    assert first == second == run.pk and (run.period_start, run.period_end) == (monday - timedelta(days=7), monday)
    assert run.trigger == "schedule" and not run.payouts.exists()


def test_a_sepa_file_the_bank_details_break_is_a_message_and_a_rerun_finishes_it(renter, operator, client_as, settings):
    # given a company owed by SEPA, whose name needs transliterating, and a broken platform IBAN
    company, _ = earning_company(renter, "1000.00", payout_iban=IBAN, payout_account_holder="Müller & Söhne ✓")
    settings.PAYOUT_DEBTOR_IBAN = "not-an-iban"
    client = client_as(operator)

    # when the operator runs payouts: a message, not a server error; the payout is booked once
    response = client.post(reverse("financing:operator_payout_run"), follow=True)
    assert response.status_code == 200 and "The SEPA file could not be built" in response.content.decode()
    run = PayoutRun.objects.get()
    assert run.status == PayoutRun.Status.RUNNING and SepaFile.objects.get().xml == ""
    assert JournalEntry.objects.filter(key__startswith="payout:").count() == 1

    # when the bank details are fixed and the same period runs again: the file is built, nothing paid twice
    settings.PAYOUT_DEBTOR_IBAN = "DE02120300000000202051"
    assert client.post(reverse("financing:operator_payout_run")).status_code == 302
    run.refresh_from_db()
    sepa_file = SepaFile.objects.get()
    assert run.status == PayoutRun.Status.DONE and "<Nm>Muller Sohne</Nm>" in sepa_file.xml
    assert JournalEntry.objects.filter(key__startswith="payout:").count() == 1
    assert Payout.objects.get(company=company).sepa_file == sepa_file
