"""API tokens (django-rest-knox, ``accounts.ApiToken``): hashed, named, scoped, expiring, several per user."""

from datetime import timedelta

import pytest
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.utils import timezone
from knox.crypto import hash_token
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.services import api_token_issue
from config.urls import api_v1
from tests.factories import PASSWORD, make_owner, make_renter
from tests.test_token_security import totp_now, wrong_code

pytestmark = pytest.mark.django_db

UNSAFE = ("post", "put", "patch", "delete")


def with_token(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_the_database_holds_only_the_digest(renter):
    issued = api_token_issue(user=renter, name="ci", scope="read")
    row = ApiToken.objects.get(pk=issued.token.pk)
    assert row.digest == hash_token(issued.key)
    stored = [str(v) for v in ApiToken.objects.filter(pk=row.pk).values().get().values()]
    assert issued.key not in stored
    assert issued.key.startswith("ifi_") and row.token_key == issued.key[:15]


def test_two_tokens_of_one_user_both_work_and_revoking_one_stops_only_it(renter):
    one, two = api_token_issue(user=renter, name="one"), api_token_issue(user=renter, name="two")
    assert with_token(one.key).get("/api/v1/me/").status_code == 200
    assert with_token(two.key).get("/api/v1/me/").status_code == 200

    revoked = APIClient()
    revoked.force_authenticate(renter)
    assert revoked.delete(f"/api/v1/auth/tokens/{one.token.pk}/").status_code == 204

    assert with_token(one.key).get("/api/v1/me/").status_code == 401
    assert with_token(two.key).get("/api/v1/me/").status_code == 200
    listed = revoked.get("/api/v1/auth/tokens/").json()
    assert [t["name"] for t in listed] == ["two"] and "token" not in listed[0]


def test_an_expired_token_is_refused(renter):
    issued = api_token_issue(user=renter, name="old")
    ApiToken.objects.filter(pk=issued.token.pk).update(expiry=timezone.now() - timedelta(seconds=1))
    assert with_token(issued.key).get("/api/v1/me/").status_code == 401


def test_a_token_names_are_unique_per_user_and_ttl_is_bounded(renter):
    api_token_issue(user=renter, name="ci")
    client = APIClient()
    for body in (
        {"username": renter.email, "password": PASSWORD, "name": "ci"},
        {"username": renter.email, "password": PASSWORD, "expires_in_days": 91},
        {"username": renter.email, "password": PASSWORD, "scope": "root"},
    ):
        response = client.post("/api/v1/auth/token/", body, format="json")
        assert response.status_code == 400, body
    assert ApiToken.objects.filter(user=renter).count() == 1


def test_a_read_token_can_get_but_not_book(renter):
    issued = api_token_issue(user=renter, name="r", scope="read")
    client = with_token(issued.key)
    assert client.get("/api/v1/bookings/").status_code == 200
    response = client.post("/api/v1/bookings/", {}, format="json")
    assert response.status_code == 403 and "with the book scope" in response.content.decode()


def test_a_book_token_books_but_is_refused_on_an_owner_endpoint(db):
    user = make_owner()
    from accounts.services import renter_role_grant

    renter_role_grant(user=user)
    client = with_token(api_token_issue(user=user, name="b", scope="book").key)
    assert client.post("/api/v1/bookings/", {}, format="json").status_code == 400  # past the scope: field errors
    response = client.post("/api/v1/inventory/servers/", {}, format="json")
    assert response.status_code == 403 and "with the owner scope" in response.content.decode()

    owner_client = with_token(api_token_issue(user=user, name="o", scope="owner").key)
    assert owner_client.post("/api/v1/inventory/servers/", {}, format="json").status_code == 400
    response = owner_client.post("/api/v1/bookings/", {}, format="json")
    assert response.status_code == 403 and "with the book scope" in response.content.decode()


def test_a_view_with_its_own_permission_classes_still_checks_the_scope(renter):
    # UsdaiBuyApi names DRF's IsAuthenticated, leaving out TokenScope: the authenticator checks it.
    response = with_token(api_token_issue(user=renter, name="r").key).post("/api/v1/wallet/usdai/", {}, format="json")
    assert response.status_code == 403 and "with the book scope" in response.content.decode()


def test_every_unsafe_api_endpoint_declares_a_token_scope():
    undeclared = []
    for pattern in api_v1:
        callback = pattern.callback
        cls = getattr(callback, "cls", None)
        if cls is None or cls.authentication_classes == []:
            continue  # the token endpoint takes no token
        actions = getattr(callback, "actions", None)
        methods = [m for m in actions if m in UNSAFE] if actions else [m for m in UNSAFE if hasattr(cls, m)]
        if methods and getattr(cls, "token_scope", None) not in ApiToken.Scope.values:
            undeclared.append((str(pattern.pattern), cls.__name__, methods))
    assert undeclared == []


@pytest.fixture
def totp_renter(db):
    user = make_renter()
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    return user, secret


def test_the_page_refuses_a_token_without_or_with_a_wrong_code(totp_renter, client_as):
    user, secret = totp_renter
    client = client_as(user)
    form = {"name": "p", "scope": "read", "expires_in_days": 30}
    missing = client.post("/account/api-token/", form)
    wrong = client.post("/account/api-token/", {**form, "code": wrong_code(secret)})
    assert missing.status_code == wrong.status_code == 400
    assert missing.context["form"].errors["code"] and wrong.context["form"].errors["code"]
    assert not ApiToken.objects.filter(user=user).exists()

    right = client.post("/account/api-token/", {**form, "code": totp_now(secret)})
    assert right.status_code == 200 and right["Cache-Control"] == "no-store, private"
    assert ApiToken.objects.get(user=user).digest == hash_token(right.context["issued"].key)


def test_the_api_refuses_a_token_without_the_code(totp_renter):
    user, secret = totp_renter
    client = APIClient()
    body = {"username": user.email, "password": PASSWORD, "scope": "book"}
    assert client.post("/api/v1/auth/token/", body, format="json").status_code == 400
    assert client.post("/api/v1/auth/token/", {**body, "code": wrong_code(secret)}, format="json").status_code == 400
    ok = client.post("/api/v1/auth/token/", {**body, "code": totp_now(secret)}, format="json")
    assert ok.status_code == 200 and ok.json()["scope"] == "book" and ok.json()["expiry"]
    assert ApiToken.objects.filter(user=user).count() == 1


def test_a_non_utf8_token_is_401_not_500(db):
    assert APIClient().get("/api/v1/me/", HTTP_AUTHORIZATION="Token \xe9\xff").status_code == 401
