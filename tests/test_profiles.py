"""Role profiles through the pages: billing, company and members, wallet, adding roles."""

import pytest
from django.urls import reverse

from accounts.models import OwnerMembership
from accounts.selectors import user_roles
from tests.factories import UserFactory, make_owner

pytestmark = pytest.mark.django_db

WALLET = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"


def test_renter_saves_billing_details(renter, client_as):
    response = client_as(renter).post(
        reverse("accounts:billing"),
        {"billing_name": "Acme AI", "billing_address": "1 Main St", "billing_country": "de", "vat_id": "DE136695976"},
    )
    assert response.status_code == 302
    renter.renter_profile.refresh_from_db()
    assert (renter.renter_profile.billing_name, renter.renter_profile.billing_country) == ("Acme AI", "DE")


def test_billing_country_must_be_two_letters(renter, client_as):
    response = client_as(renter).post(
        reverse("accounts:billing"), {"billing_name": "X", "billing_address": "Y", "billing_country": "Germany"}
    )
    assert response.status_code == 400
    assert "billing_country" in response.context["form"].errors
    renter.renter_profile.refresh_from_db()
    assert renter.renter_profile.billing_name == ""


def test_owner_updates_payout_details_and_adds_a_member(owner, client_as):
    client = client_as(owner)
    saved = client.post(
        reverse("accounts:company"),
        {
            "name": "Renamed Compute",
            "payout_account_holder": "Renamed Compute GmbH",
            "payout_iban": "de89 3704 0044 0532 0130 00",
            "payout_bic": "cobadeffxxx",
            "payout_wallet_address": WALLET,
        },
    )
    assert saved.status_code == 302
    company = owner.owner_membership.company
    company.refresh_from_db()
    assert (company.name, company.payout_iban, company.payout_bic) == (
        "Renamed Compute",
        "DE89370400440532013000",
        "COBADEFFXXX",
    )

    # inviting a colleague enrols no one: the membership waits for their consent
    colleague = UserFactory()
    invited = client.post(reverse("accounts:company"), {"action": "member", "member-email": colleague.email.upper()})
    assert invited.status_code == 302
    assert not OwnerMembership.objects.filter(user=colleague).exists()
    assert "owner" not in user_roles(colleague)


def test_inviting_a_member_of_another_company_enrols_no_one_and_says_nothing(owner, client_as):
    other = make_owner()
    response = client_as(owner).post(
        reverse("accounts:company"), {"action": "member", "member-email": other.email}, follow=True
    )
    assert response.status_code == 200
    assert "already belongs" not in response.content.decode()
    assert other.owner_membership.company != owner.owner_membership.company


def test_payout_wallet_without_checksum_is_refused(owner, client_as):
    company = owner.owner_membership.company
    response = client_as(owner).post(
        reverse("accounts:company"), {"name": company.name, "payout_wallet_address": WALLET.lower()}
    )
    assert response.status_code == 400
    assert WALLET in response.content.decode()  # the suggestion shows the checksummed form
    company.refresh_from_db()
    assert company.payout_wallet_address == ""


def test_lender_sets_wallet_and_bad_one_changes_nothing(lender, client_as):
    client = client_as(lender)
    assert client.post(reverse("accounts:wallet"), {"wallet_address": WALLET}).status_code == 302
    bad = client.post(reverse("accounts:wallet"), {"wallet_address": "0x1234"})
    assert bad.status_code == 400
    lender.lender_profile.refresh_from_db()
    assert lender.lender_profile.wallet_address == WALLET


def test_one_wallet_per_lender(lender, client_as):
    from tests.factories import make_lender

    make_lender(wallet_address=WALLET)
    response = client_as(lender).post(reverse("accounts:wallet"), {"wallet_address": WALLET})
    assert response.status_code == 400
    assert "already registered to another lender" in response.content.decode()


def test_a_renter_adds_the_owner_and_lender_roles(renter, client_as):
    client = client_as(renter)
    assert client.post(reverse("accounts:roles"), {"action": "owner", "company-company_name": ""}).status_code == 400
    assert (
        client.post(reverse("accounts:roles"), {"action": "owner", "company-company_name": "New Co"}).status_code == 302
    )
    assert client.post(reverse("accounts:roles"), {"action": "lender"}).status_code == 302
    renter.refresh_from_db()
    assert user_roles(renter) == {"renter", "owner", "lender"}
    dashboard = client.get(reverse("dashboard"))
    assert dashboard.status_code == 200 and len(dashboard.context["cards"]) == 3
