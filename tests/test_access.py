"""Who may open what: dashboards, inventory pages and the inventory API, per role."""

import pytest
from django.urls import reverse

from tests.factories import make_server

pytestmark = pytest.mark.django_db

ROLES = ["anon", "renter", "owner", "lender", "operator"]

# page name -> role -> expected status (302 for anon: sent to log in)
PAGES = {
    "marketplace:renter_dashboard": {"anon": 302, "renter": 200, "owner": 403, "lender": 403, "operator": 403},
    "marketplace:owner_dashboard": {"anon": 302, "renter": 403, "owner": 200, "lender": 403, "operator": 403},
    "marketplace:server_list": {"anon": 302, "renter": 403, "owner": 200, "lender": 403, "operator": 403},
    "marketplace:server_create": {"anon": 302, "renter": 403, "owner": 200, "lender": 403, "operator": 403},
    "marketplace:server_import": {"anon": 302, "renter": 403, "owner": 200, "lender": 403, "operator": 403},
    "financing:lender_dashboard": {"anon": 302, "renter": 403, "owner": 403, "lender": 200, "operator": 403},
    "accounts:billing": {"anon": 302, "renter": 200, "owner": 403, "lender": 403, "operator": 403},
    "accounts:company": {"anon": 302, "renter": 403, "owner": 200, "lender": 403, "operator": 403},
    "accounts:wallet": {"anon": 302, "renter": 403, "owner": 403, "lender": 200, "operator": 403},
    "accounts:roles": {"anon": 302, "renter": 200, "owner": 200, "lender": 200, "operator": 200},
    "home": {"anon": 200, "renter": 200, "owner": 200, "lender": 200, "operator": 200},
    "admin:index": {"anon": 302, "renter": 302, "owner": 302, "lender": 302, "operator": 200},
}

# API endpoint -> role -> expected status
API = {
    "api:server-list": {"anon": 401, "renter": 403, "owner": 200, "lender": 403, "operator": 403},
    "api:gpu-list": {"anon": 401, "renter": 403, "owner": 200, "lender": 403, "operator": 403},
    "api:gpu-model-list": {"anon": 200, "renter": 200, "owner": 200, "lender": 200, "operator": 200},
    "api:region-list": {"anon": 200, "renter": 200, "owner": 200, "lender": 200, "operator": 200},
    "api:me": {"anon": 401, "renter": 200, "owner": 200, "lender": 200, "operator": 200},
}


@pytest.fixture
def people(renter, owner, lender, operator):
    return {"anon": None, "renter": renter, "owner": owner, "lender": lender, "operator": operator}


@pytest.mark.parametrize("name", PAGES)
def test_page_access_matrix(name, people, client_as):
    got = {role: client_as(people[role]).get(reverse(name)).status_code for role in ROLES}
    assert got == PAGES[name]


@pytest.mark.parametrize("name", API)
def test_api_access_matrix(name, people, api_as):
    got = {role: api_as(people[role]).get(reverse(name)).status_code for role in ROLES}
    assert got == API[name]


def test_forbidden_page_explains_itself(renter, client_as):
    response = client_as(renter).get(reverse("marketplace:owner_dashboard"))
    assert response.status_code == 403
    assert "This page is for GPU owners" in response.content.decode()


def test_anonymous_is_sent_to_login_with_next(client):
    response = client.get(reverse("marketplace:server_list"))
    assert response.status_code == 302
    assert response.url.startswith(reverse("account_login")) and "next=" in response.url


def test_another_owners_server_is_not_found(owner, other_owner, client_as, api_as):
    server = make_server(other_owner)
    assert client_as(owner).get(reverse("marketplace:server_detail", args=[server.pk])).status_code == 404
    assert api_as(owner).get(reverse("api:server-detail", args=[server.pk])).status_code == 404
    assert api_as(owner).delete(reverse("api:server-detail", args=[server.pk])).status_code == 404
    assert server.__class__.objects.filter(pk=server.pk).exists()


def test_dashboard_routes_single_role_users_to_their_page(renter, client_as):
    response = client_as(renter).get(reverse("dashboard"))
    assert response.status_code == 302 and response.url == reverse("marketplace:renter_dashboard")


def test_token_authentication(owner, client):
    body = {"username": owner.email, "password": "correct-horse-battery-9"}
    response = client.post(reverse("api:token"), body, content_type="application/json")
    assert response.status_code == 200
    token = response.json()["token"]
    me = client.get(reverse("api:me"), HTTP_AUTHORIZATION=f"Token {token}")
    assert me.status_code == 200
    assert me.json()["roles"] == ["owner"]
    assert client.get(reverse("api:me"), HTTP_AUTHORIZATION="Token not-a-token").status_code == 401


def test_revoking_a_token_on_the_page_stops_it_and_only_it(owner, client_as):
    client = client_as(owner)
    first = client.post(reverse("accounts:api_token"), {"name": "one", "scope": "read", "expires_in_days": 30})
    second = client.post(reverse("accounts:api_token"), {"name": "two", "scope": "read", "expires_in_days": 30})
    first_key, second_key = first.context["issued"].key, second.context["issued"].key
    assert first_key != second_key

    revoked = client.post(reverse("accounts:api_token_revoke", args=[first.context["issued"].token.pk]))

    assert revoked.status_code == 302
    anon = client_as(None)
    assert anon.get(reverse("api:me"), HTTP_AUTHORIZATION=f"Token {first_key}").status_code == 401
    assert anon.get(reverse("api:me"), HTTP_AUTHORIZATION=f"Token {second_key}").status_code == 200


@pytest.mark.parametrize("model", ["booking", "payment", "refund", "settlement", "webhookevent", "listing", "server"])
def test_operator_admin_lists_marketplace_records(model, operator, client_as):
    response = client_as(operator).get(reverse(f"admin:marketplace_{model}_changelist"))
    assert response.status_code == 200


def test_operator_cannot_edit_money_records_in_admin(operator, owner, renter, client_as):
    from datetime import timedelta

    from marketplace.services.bookings import booking_create
    from tests.factories import make_listing, next_hour

    listing = make_listing(owner, gpu_count=1)
    booking = booking_create(
        renter=renter, listing=listing, gpu_count=1, start=next_hour(2), end=next_hour(2) + timedelta(hours=1)
    )
    client = client_as(operator)
    assert client.get(reverse("admin:marketplace_booking_add")).status_code == 403
    page = client.get(reverse("admin:marketplace_booking_change", args=[booking.pk]))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
