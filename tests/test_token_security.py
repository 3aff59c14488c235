"""The API token endpoint: the login form's lockout, the second factor, throttling.

Issue 13, item 11: the endpoint used to hand out a token for the password alone,
never counted a failure and never answered 429.
"""

import base64
import hashlib
import hmac
import struct
import time

import pytest
from allauth.account import app_settings as allauth_account_settings
from allauth.core.internal.ratelimit import parse_rates
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.core.cache import cache
from django.urls import reverse
from knox.crypto import hash_token
from rest_framework.settings import api_settings

from accounts.models import ApiToken
from tests.factories import PASSWORD, make_owner

pytestmark = pytest.mark.django_db

# The per-account limit of the login form (allauth's "login_failed" rate, keyed by e-mail).
(KEY_RATE,) = [rate for rate in parse_rates(allauth_account_settings.RATE_LIMITS["login_failed"]) if rate.per == "key"]
LOCKED_OUT = "Too many failed login attempts. Try again later."
NEEDS_CODE = "This account uses two-factor authentication: send a current code."


def needs_code(response) -> bool:
    """400 naming the code (the error body's shape belongs to the API's error format)."""
    return response.status_code == 400 and NEEDS_CODE in response.content.decode()


@pytest.fixture(autouse=True)
def _no_throttle_state():
    """Failure counts and throttle histories live in the shared cache: none may leak between tests."""
    cache.clear()
    yield
    cache.clear()


def totp_now(secret: str, at: float | None = None) -> str:
    """RFC 6238 TOTP (SHA-1, 30 s, 6 digits), computed independently of allauth."""
    counter = int((at or time.time()) // 30)
    key = base64.b32decode(secret, casefold=True)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def wrong_code(secret: str) -> str:
    valid = {totp_now(secret, time.time() + step * 30) for step in (-1, 0, 1)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in valid)


def token_post(client, email, password, **extra):
    body = {"username": email, "password": password, **extra}
    return client.post(reverse("api:token"), body, content_type="application/json")


def login_form_post(client, email, password):
    return client.post(reverse("account_login"), {"login": email, "password": password})


def login_form_locked(response) -> bool:
    return response.status_code == 200 and LOCKED_OUT in response.content.decode()


def test_an_account_locked_by_the_login_form_gets_429_on_the_api(owner, client):
    # given an account whose login form has seen as many wrong passwords as the lockout allows
    for _ in range(KEY_RATE.amount):
        assert not login_form_locked(login_form_post(client, owner.email, "wrong-password"))
    assert login_form_locked(login_form_post(client, owner.email, "wrong-password"))

    # when the right password is sent to the token endpoint
    response = token_post(client, owner.email, PASSWORD)

    # then it is refused with 429 and a Retry-After, and no token exists
    assert response.status_code == 429
    seconds = int(KEY_RATE.duration)
    assert f"{LOCKED_OUT} Expected available in {seconds} seconds." in response.content.decode()
    assert int(response["Retry-After"]) == seconds
    assert not ApiToken.objects.filter(user=owner).exists()


def test_failures_on_the_api_lock_the_api_and_the_login_form(owner, client):
    # given as many wrong passwords on the token endpoint as the lockout allows
    for _ in range(KEY_RATE.amount):
        response = token_post(client, owner.email, "wrong-password")
        assert response.status_code == 400

    # when the right password follows, on the API and on the login form
    api = token_post(client, owner.email, PASSWORD)
    form = login_form_post(client, owner.email, PASSWORD)

    # then both are locked
    assert api.status_code == 429 and "Retry-After" in api
    assert login_form_locked(form)
    assert not ApiToken.objects.filter(user=owner).exists()
    assert "_auth_user_id" not in client.session


def test_a_right_password_does_not_use_up_the_lockout(owner, client):
    # given one failure short of the lockout
    for _ in range(KEY_RATE.amount - 1):
        token_post(client, owner.email, "wrong-password")

    # when the right password is sent twice
    first = token_post(client, owner.email, PASSWORD)
    second = token_post(client, owner.email, PASSWORD)

    # then both succeed, each with its own token (a success is not counted as a failure)
    assert first.status_code == second.status_code == 200
    keys = {first.json()["token"], second.json()["token"]}
    assert len(keys) == 2
    assert set(ApiToken.objects.filter(user=owner).values_list("digest", flat=True)) == {hash_token(k) for k in keys}


@pytest.fixture
def totp_owner(db):
    user = make_owner()
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    return user, secret


def test_a_totp_account_gets_no_token_for_the_password_alone(totp_owner, client):
    user, _ = totp_owner

    response = token_post(client, user.email, PASSWORD)

    assert needs_code(response)
    assert not ApiToken.objects.filter(user=user).exists()


def test_a_totp_account_gets_a_token_with_the_password_and_a_current_code(totp_owner, client):
    user, secret = totp_owner

    response = token_post(client, user.email, PASSWORD, code=totp_now(secret))

    assert response.status_code == 200
    assert ApiToken.objects.get(user=user).digest == hash_token(response.json()["token"])


def test_a_used_code_cannot_be_replayed(totp_owner, client):
    user, secret = totp_owner
    code = totp_now(secret)
    assert token_post(client, user.email, PASSWORD, code=code).status_code == 200
    ApiToken.objects.filter(user=user).delete()

    replay = token_post(client, user.email, PASSWORD, code=code)

    assert needs_code(replay)
    assert not ApiToken.objects.filter(user=user).exists()


def test_wrong_codes_count_towards_the_lockout(totp_owner, client):
    user, secret = totp_owner

    # given as many wrong codes (with the right password) as the lockout allows
    for _ in range(KEY_RATE.amount):
        response = token_post(client, user.email, PASSWORD, code=wrong_code(secret))
        assert needs_code(response)

    # when the right password and a current code follow
    response = token_post(client, user.email, PASSWORD, code=totp_now(secret))

    # then the account is locked, on the API and on the login form
    assert response.status_code == 429
    assert login_form_locked(login_form_post(client, user.email, PASSWORD))
    assert not ApiToken.objects.filter(user=user).exists()


def test_anonymous_requests_beyond_the_rate_are_throttled(client):
    amount = int(api_settings.DEFAULT_THROTTLE_RATES["anon"].split("/")[0])
    url = reverse("api:gpu-model-list")

    statuses = [client.get(url).status_code for _ in range(amount)]
    over = client.get(url)

    assert statuses == [200] * amount
    assert over.status_code == 429 and int(over["Retry-After"]) > 0


def test_the_token_endpoint_has_a_stricter_throttle(db, client):
    amount = int(api_settings.DEFAULT_THROTTLE_RATES["token"].split("/")[0])
    assert amount < int(api_settings.DEFAULT_THROTTLE_RATES["anon"].split("/")[0])

    # different unknown addresses, so that the per-account lockout is not what answers
    statuses = [token_post(client, f"nobody{i}@example.com", "x").status_code for i in range(amount)]
    over = token_post(client, "nobody-else@example.com", "x")

    assert statuses == [400] * amount
    assert over.status_code == 429 and int(over["Retry-After"]) > 0
    assert "Request was throttled." in over.content.decode()
