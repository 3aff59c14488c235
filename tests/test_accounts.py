"""Sign-up, e-mail verification, login and TOTP through allauth, on the real views."""

import base64
import hashlib
import hmac
import re
import struct
import time

import pytest
from allauth.mfa.models import Authenticator
from django.core import mail
from django.urls import reverse

from accounts.models import LenderProfile, OwnerCompany, OwnerMembership, RenterProfile, User
from accounts.selectors import user_roles
from tests.factories import PASSWORD, make_lender, make_owner

pytestmark = pytest.mark.django_db

VALID_WALLET = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def totp_now(secret: str, at: float | None = None) -> str:
    """RFC 6238 TOTP (SHA-1, 30 s, 6 digits), computed independently of allauth."""
    counter = int((at or time.time()) // 30)
    key = base64.b32decode(secret, casefold=True)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 1_000_000:06d}"


def signup(client, email, roles, **extra):
    data = {"email": email, "password1": PASSWORD, "password2": PASSWORD, "roles": roles, **extra}
    return client.post(reverse("account_signup"), data)


def test_signup_verify_then_login(client):
    # given a visitor signing up as renter and owner
    response = signup(client, "ada@example.com", ["renter", "owner"], company_name="Ada Compute")

    # then they must verify their e-mail before they are in
    assert response.status_code == 302
    assert response.url == reverse("account_email_verification_sent")
    user = User.objects.get(email="ada@example.com")
    assert user_roles(user) == {"renter", "owner"}
    assert OwnerCompany.objects.get(name="Ada Compute").memberships.get().user == user
    assert len(mail.outbox) == 1
    assert client.get(reverse("dashboard")).status_code == 302  # not logged in yet

    # when they follow the link in the e-mail
    link = re.search(r"https?://[^/]+(/accounts/confirm-email/[^\s]+/)", mail.outbox[0].body).group(1)
    assert client.get(link).status_code == 200
    confirm = client.post(link)

    # then the address is verified and they are logged in
    assert confirm.status_code == 302
    assert user.emailaddress_set.get().verified is True
    dashboard = client.get(reverse("dashboard"))
    assert dashboard.status_code == 200
    assert b"Owner" in dashboard.content and b"Renter" in dashboard.content

    # and a later login with the password works
    client.post(reverse("account_logout"))
    login = client.post(reverse("account_login"), {"login": "ada@example.com", "password": PASSWORD})
    assert login.status_code == 302 and login.url == reverse("dashboard")


def test_login_refused_until_verified(client):
    signup(client, "bob@example.com", ["renter"])
    client.post(reverse("account_logout"))
    response = client.post(reverse("account_login"), {"login": "bob@example.com", "password": PASSWORD})
    assert response.status_code == 302
    assert response.url == reverse("account_email_verification_sent")
    assert "_auth_user_id" not in client.session


def test_signup_as_owner_without_company_is_a_form_error_and_creates_nothing(client):
    response = signup(client, "carol@example.com", ["owner"], company_name="")
    assert response.status_code == 200
    assert "Owners must name their company." in response.content.decode()
    assert not User.objects.filter(email="carol@example.com").exists()
    assert OwnerMembership.objects.count() == 0


def test_signup_with_taken_company_name_creates_nothing(client):
    make_owner(company_name="Taken GPU Co")
    response = signup(client, "dan@example.com", ["owner"], company_name="taken gpu co")
    assert "A company with this name already exists." in response.content.decode()
    assert not User.objects.filter(email="dan@example.com").exists()


def test_signup_as_lender_with_bad_checksum_wallet_creates_nothing(client):
    bad = VALID_WALLET.replace("5aAeb", "5AAeb")  # one letter's case flipped: checksum breaks
    response = signup(client, "eve@example.com", ["lender"], wallet_address=bad)
    assert "EIP-55 checksum" in response.content.decode()
    assert not User.objects.filter(email="eve@example.com").exists()
    assert LenderProfile.objects.count() == 0


def test_signup_as_lender_with_checksummed_wallet(client):
    signup(client, "fay@example.com", ["lender", "renter"], wallet_address=VALID_WALLET)
    user = User.objects.get(email="fay@example.com")
    assert user.lender_profile.wallet_address == VALID_WALLET
    assert RenterProfile.objects.filter(user=user).exists()


def test_password_reset_sends_a_working_link(client):
    user = make_owner()
    client.post(reverse("account_reset_password"), {"email": user.email})
    assert len(mail.outbox) == 1
    link = re.search(r"https?://[^/]+(/accounts/password/reset/key/[^\s]+/)", mail.outbox[0].body).group(1)
    form_page = client.get(link, follow=True)
    assert form_page.status_code == 200
    response = client.post(
        form_page.redirect_chain[-1][0] if form_page.redirect_chain else link,
        {"password1": "a-new-long-passphrase-7", "password2": "a-new-long-passphrase-7"},
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password("a-new-long-passphrase-7")


def test_owner_enables_totp_and_then_needs_a_code_to_log_in(client):
    # given an owner logged in with a password
    user = make_owner()
    client.post(reverse("account_login"), {"login": user.email, "password": PASSWORD})
    assert "Set it up now" in client.get(reverse("marketplace:owner_dashboard")).content.decode()

    # when they open the TOTP page and confirm with a code from their authenticator
    page = client.get(reverse("mfa_activate_totp"), follow=True)
    if page.redirect_chain:  # allauth asks for the password again before a security change
        assert page.redirect_chain[-1][0].startswith(reverse("account_reauthenticate"))
        client.post(page.redirect_chain[-1][0], {"password": PASSWORD})
        page = client.get(reverse("mfa_activate_totp"))
    assert page.status_code == 200
    secret = client.session["mfa.totp.secret"]
    wrong = client.post(reverse("mfa_activate_totp"), {"code": "000000" if totp_now(secret) != "000000" else "111111"})
    assert wrong.status_code == 200 and not Authenticator.objects.filter(user=user).exists()
    response = client.post(reverse("mfa_activate_totp"), {"code": totp_now(secret)})

    # then TOTP is on, and the dashboard no longer offers it
    assert response.status_code == 302
    assert Authenticator.objects.filter(user=user, type=Authenticator.Type.TOTP).exists()
    assert "Set it up now" not in client.get(reverse("marketplace:owner_dashboard")).content.decode()

    # and the next login stops at the second factor until a valid code is given
    client.post(reverse("account_logout"))
    login = client.post(reverse("account_login"), {"login": user.email, "password": PASSWORD})
    assert login.status_code == 302 and login.url == reverse("mfa_authenticate")
    assert "_auth_user_id" not in client.session
    # A code of the next period: allauth refuses re-use of the code that activated TOTP.
    done = client.post(reverse("mfa_authenticate"), {"code": totp_now(secret, time.time() + 30)})
    assert done.status_code == 302
    assert client.session["_auth_user_id"] == str(user.pk)


def test_lender_sees_the_mfa_offer(client_as):
    lender = make_lender(wallet_address=VALID_WALLET)
    page = client_as(lender).get(reverse("financing:lender_dashboard"))
    assert page.status_code == 200
    assert "two-factor" in page.content.decode()
    assert VALID_WALLET in page.content.decode()
