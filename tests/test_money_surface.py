"""Issue 14's new surface probed from outside: every new page and API endpoint as an anonymous
visitor, the wrong role, another user or company, a plain member, with malformed bodies,
the wrong method, no CSRF token, garbage query strings, other users' hashes and replayed or
altered sign-in messages.

Each test asserts what the issue asks for (a clear 400 with the field at fault, 302/403/404
for whoever may not see it, never a 500, nothing half-written). The clients here do not
re-raise a view's exception, so a crash is a 500 the assertion names.

Real parts: PostgreSQL, the in-process EVM (``chain``) where a link or a hash needs one,
localstripe (``stripe_mode``) where a card flow does.
"""

import csv
import io
import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from eth_account import Account
from rest_framework.test import APIClient

from accounts.models import OwnerCompany
from accounts.services import api_token_issue
from financing.chain.own_wallets import unsigned_call
from financing.chain.siwe import siwe_sign
from financing.models import (
    JournalEntry,
    LinkedWallet,
    Payout,
    PayoutRun,
    SepaFile,
    SiweNonce,
    UsdaiPurchase,
    WalletOperation,
)
from financing.services import wallets
from financing.services.wallet_links import siwe_nonce_issue, wallet_link
from marketplace.models import Server
from marketplace.selectors.cards import saved_cards
from marketplace.services import bookings, cards
from tests.api_errors import field_errors
from tests.factories import UserFactory, make_lender, make_listing, make_operator, make_owner, make_renter, next_hour
from tests.test_chain_watch import send
from tests.test_payout_pages import VALID, member_of, run_week
from tests.test_payouts import IBAN, earning_company

pytestmark = pytest.mark.django_db

E18 = 10**18
UUID = "00000000-0000-4000-8000-000000000000"
HUGE = 10**19  # one past PostgreSQL's bigint
LONG = "x" * 10_000
HASH = "0x" + "ab" * 32


def web(user=None, *, csrf: bool = False) -> Client:
    """A browser session that sees a crash as the 500 it is (not a re-raised exception)."""
    client = Client(raise_request_exception=False, enforce_csrf_checks=csrf)
    if user is not None:
        client.force_login(user)
    return client


def api(user=None) -> APIClient:
    client = APIClient(raise_request_exception=False)
    if user is not None:
        client.force_authenticate(user)
    return client


def post_json(client, url: str, body) -> object:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(url, data=data, content_type="application/json")


def nobody():
    """Signed in, no role at all."""
    return UserFactory()


USERS = {
    "nobody": nobody,
    "renter": make_renter,
    "owner": make_owner,
    "lender": make_lender,
    "operator": make_operator,
}


# --- Who may open what ---------------------------------------------------------------------------

# (url name, kwargs, method, the roles that may use it; None = any signed-in user)
PAGES = [
    ("financing:wallet_link_nonce", {}, "post", None),
    ("financing:wallet_link", {}, "post", None),
    ("financing:wallet_unlink", {}, "get", None),
    ("financing:wallet_vault_calls", {}, "post", {"lender"}),
    ("financing:wallet_vault_submit", {}, "post", {"lender"}),
    ("financing:wallet", {}, "get", None),
    ("financing:wallet_history_csv", {}, "get", None),
    ("financing:owner_payouts", {}, "get", {"owner"}),
    ("financing:owner_statement_csv", {"run_id": 1}, "get", {"owner"}),
    ("financing:operator_payouts", {}, "get", {"operator"}),
    ("financing:operator_payout_run", {}, "post", {"operator"}),
    ("financing:operator_sepa_download", {"pk": 1}, "get", {"operator"}),
    ("financing:operator_sepa_mark_sent", {"pk": 1}, "post", {"operator"}),
    ("marketplace:cards", {}, "get", {"renter"}),
    ("marketplace:checkout", {"public_id": UUID}, "get", {"renter"}),
    ("marketplace:checkout_return", {"public_id": UUID}, "get", {"renter"}),
]
PAGE_IDS = [name.split(":")[1] for name, *_ in PAGES]


@pytest.mark.parametrize(("name", "kwargs", "method", "roles"), PAGES, ids=PAGE_IDS)
def test_an_anonymous_visitor_is_sent_to_log_in(name, kwargs, method, roles):
    url = reverse(name, kwargs=kwargs)
    response = getattr(web(), method)(url)
    assert response.status_code == 302 and response["Location"].startswith(reverse("account_login"))
    assert not PayoutRun.objects.exists()


# An operator is a staff user with no other role: a renter's, owner's or lender's page is not theirs either.
WRONG_ROLE = [
    (name, kwargs, method, role)
    for name, kwargs, method, roles in PAGES
    if roles is not None
    for role in USERS
    if role not in roles
]


@pytest.mark.parametrize(
    ("name", "kwargs", "method", "role"),
    WRONG_ROLE,
    ids=[f"{n.split(':')[1]}-{r}" for n, _, _, r in WRONG_ROLE],
)
def test_a_user_without_the_role_gets_403(name, kwargs, method, role):
    user = USERS[role]()
    response = getattr(web(user), method)(reverse(name, kwargs=kwargs))
    assert response.status_code == 403
    assert not PayoutRun.objects.exists()


@pytest.mark.parametrize(
    ("name", "via"),
    [
        ("financing:wallet", web),
        ("financing:wallet_history_csv", web),
        ("financing:wallet_unlink", web),
        ("api:own-wallet", api),
    ],
)
def test_a_user_with_no_role_and_no_wallet_gets_an_empty_page_not_a_crash(name, via):
    response = via(nobody()).get(reverse(name))
    assert response.status_code == 200


API = [
    ("api:own-wallet", {}, "get"),
    ("api:own-wallet", {}, "post"),
    ("api:own-wallet-nonce", {}, "post"),
    ("api:own-wallet-unlink", {}, "post"),
    ("api:own-wallet-calls", {}, "post"),
    ("api:own-wallet-operations", {}, "post"),
    ("api:owner-payouts", {}, "get"),
    ("api:owner-payout", {"pk": 1}, "get"),
    ("api:owner-payout-statement", {"run_id": 1}, "get"),
]


@pytest.mark.parametrize(("name", "kwargs", "method"), API, ids=[f"{n[4:]}-{m}" for n, _, m in API])
def test_the_api_refuses_an_anonymous_caller(name, kwargs, method):
    response = getattr(api(), method)(reverse(name, kwargs=kwargs), {}, format="json")
    assert response.status_code == 401
    assert field_errors(response)  # the project's error shape


@pytest.mark.parametrize(
    ("name", "scope", "method"),
    [
        ("api:own-wallet-nonce", "read", "post"),
        ("api:own-wallet-nonce", "owner", "post"),
        ("api:own-wallet-operations", "owner", "post"),
        ("api:own-wallet-unlink", "read", "post"),
    ],
)
def test_an_api_token_without_the_book_scope_cannot_act_on_a_wallet(name, scope, method):
    user = make_lender()
    token = api_token_issue(user=user, name="probe", scope=scope)
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    response = getattr(client, method)(
        reverse(name), {"address": "0x" + "1" * 40, "kind": "deposit", "tx_hash": HASH}, format="json"
    )
    assert response.status_code == 403
    assert not (SiweNonce.objects.exists() or WalletOperation.objects.exists())
    assert client.get(reverse("api:own-wallet")).status_code == 200  # reading is any scope's


API_WRONG_ROLE = [
    ("api:own-wallet-calls", {}, "post", "renter"),
    ("api:own-wallet-operations", {}, "post", "owner"),
    ("api:owner-payouts", {}, "get", "lender"),
    ("api:owner-payout", {"pk": 1}, "get", "renter"),
    ("api:owner-payout-statement", {"run_id": 1}, "get", "lender"),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "method", "role"), API_WRONG_ROLE, ids=[f"{n[4:]}-{r}" for n, _, _, r in API_WRONG_ROLE]
)
def test_the_api_refuses_the_wrong_role(name, kwargs, method, role):
    body = {"kind": "deposit", "amount": "1", "tx_hash": HASH}
    response = getattr(api(USERS[role]()), method)(reverse(name, kwargs=kwargs), body, format="json")
    assert response.status_code == 403
    assert not WalletOperation.objects.exists()


# --- Methods and CSRF ------------------------------------------------------------------------------

WRONG_METHOD = [
    ("financing:wallet_link_nonce", {}, "get", "lender"),
    ("financing:wallet_link", {}, "get", "lender"),
    ("financing:wallet_vault_calls", {}, "get", "lender"),
    ("financing:wallet_vault_submit", {}, "get", "lender"),
    ("financing:wallet_unlink", {}, "put", "lender"),
    ("financing:owner_payouts", {}, "post", "owner"),
    ("financing:owner_statement_csv", {"run_id": 1}, "post", "owner"),
    ("financing:operator_payouts", {}, "post", "operator"),
    ("financing:operator_payout_run", {}, "get", "operator"),
    ("financing:operator_sepa_download", {"pk": 1}, "post", "operator"),
    ("financing:operator_sepa_mark_sent", {"pk": 1}, "get", "operator"),
    ("marketplace:cards", {}, "delete", "renter"),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "method", "role"), WRONG_METHOD, ids=[f"{n.split(':')[1]}-{m}" for n, _, m, _ in WRONG_METHOD]
)
def test_the_wrong_method_is_405(name, kwargs, method, role):
    response = getattr(web(USERS[role]()), method)(reverse(name, kwargs=kwargs))
    assert response.status_code == 405
    assert not PayoutRun.objects.exists()


API_WRONG_METHOD = [
    ("api:own-wallet-nonce", "get"),
    ("api:own-wallet-unlink", "get"),
    ("api:own-wallet-calls", "get"),
    ("api:own-wallet-operations", "get"),
    ("api:own-wallet", "delete"),
    ("api:owner-payouts", "post"),
]


@pytest.mark.parametrize(("name", "method"), API_WRONG_METHOD, ids=[f"{n[4:]}-{m}" for n, m in API_WRONG_METHOD])
def test_the_api_answers_the_wrong_method_with_405(name, method):
    user = make_owner() if "owner" in name else make_lender()
    response = getattr(api(user), method)(reverse(name), {}, format="json")
    assert response.status_code == 405 and field_errors(response)


CSRF = [
    ("financing:wallet_link_nonce", {}, "lender", {"address": "0x" + "1" * 40}),
    ("financing:wallet_link", {}, "lender", {"message": "m", "signature": "0x00"}),
    ("financing:wallet_unlink", {}, "lender", {"reauth": "x"}),
    ("financing:wallet_vault_calls", {}, "lender", {"kind": "deposit", "amount": "1"}),
    ("financing:wallet_vault_submit", {}, "lender", {"kind": "deposit", "tx_hash": HASH}),
    ("financing:operator_payout_run", {}, "operator", {}),
    ("financing:operator_sepa_mark_sent", {"pk": 1}, "operator", {}),
    ("marketplace:cards", {}, "renter", {"card": "pm_x"}),
    ("accounts:company", {}, "owner", VALID),
]


@pytest.mark.parametrize(("name", "kwargs", "role", "body"), CSRF, ids=[n.split(":")[1] for n, *_ in CSRF])
def test_every_form_and_json_call_needs_the_csrf_token(name, kwargs, role, body):
    client = web(USERS[role](), csrf=True)
    response = client.post(reverse(name, kwargs=kwargs), body)
    assert response.status_code == 403
    assert not (SiweNonce.objects.exists() or WalletOperation.objects.exists() or PayoutRun.objects.exists())
    assert not OwnerCompany.objects.filter(name=VALID["name"]).exists()


def test_the_api_with_a_session_needs_the_csrf_token(lender):
    client = APIClient(enforce_csrf_checks=True, raise_request_exception=False)
    client.force_login(lender)
    response = client.post(reverse("api:own-wallet-nonce"), {"address": "0x" + "1" * 40}, format="json")
    assert response.status_code == 403 and not SiweNonce.objects.exists()


# --- Malformed bodies on the page's JSON calls and the API -------------------------------------------

BAD_BODIES = {
    "not-json": b"{not json",
    "a-list": b"[1, 2]",
    "a-string": b'"address"',
    "empty": b"{}",
    "wrong-types": {"address": 5, "message": [1], "signature": {"a": 1}, "kind": 7, "tx_hash": 1.5, "amount": True},
    "10kb": {"address": LONG, "message": LONG, "signature": LONG, "kind": LONG, "tx_hash": LONG, "amount": LONG},
    "unicode": {
        "address": "0x" + "４" * 40,
        "message": "💸 wants you to sign in",
        "signature": "0x" + "ａ" * 130,
        "kind": "dépôt",
        "tx_hash": "0x" + "ａ" * 64,
        "amount": "١٠",
    },
    "nul": {"address": "0x\x00", "message": "a\x00b", "signature": "\x00", "kind": "deposit\x00", "tx_hash": "\x00"},
    "huge-numbers": {"kind": "deposit", "amount": "1e400", "shares": 1e300, "request_id": HUGE, "tx_hash": HASH},
    "negative": {"kind": "deposit", "amount": "-5", "shares": "-1", "request_id": -1, "tx_hash": HASH},
    "nan": {"kind": "redeem", "amount": "NaN", "shares": "Infinity", "tx_hash": HASH},
}
JSON_PAGES = ["wallet_link_nonce", "wallet_link", "wallet_vault_calls", "wallet_vault_submit"]


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
@pytest.mark.parametrize("name", JSON_PAGES)
def test_the_pages_json_calls_answer_bad_bodies_with_field_errors(lender, name, body):
    response = post_json(web(lender), reverse(f"financing:{name}"), body)
    assert response.status_code == 400, response.content[:300]
    errors = response.json()["errors"]
    assert errors and all(isinstance(v, list) and v for v in errors.values())
    assert not (SiweNonce.objects.exists() or LinkedWallet.objects.exists() or WalletOperation.objects.exists())


API_JSON = ["api:own-wallet", "api:own-wallet-nonce", "api:own-wallet-calls", "api:own-wallet-operations"]


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
@pytest.mark.parametrize("name", API_JSON)
def test_the_api_answers_bad_bodies_with_field_errors(lender, name, body):
    response = post_json(api(lender), reverse(name), body)
    assert response.status_code == 400, response.content[:300]
    assert field_errors(response)
    assert not (SiweNonce.objects.exists() or LinkedWallet.objects.exists() or WalletOperation.objects.exists())


@pytest.mark.parametrize("reauth", ["", "wrong", LONG, "\x00", "🔑" * 50])
def test_unlinking_with_a_bad_proof_is_a_field_error_and_keeps_the_link(chain, lender, reauth):
    account = Account.create()
    issued = siwe_nonce_issue(user=lender, address=account.address, domain="testserver", uri="http://testserver/")
    wallet_link(
        user=lender, message=issued.message, signature=siwe_sign(issued.message, account.key), domain="testserver"
    )

    page = web(lender).post(reverse("financing:wallet_unlink"), {"reauth": reauth})
    answer = api(lender).post(reverse("api:own-wallet-unlink"), {"reauth": reauth}, format="json")

    assert page.status_code == 400 and b"reauth" in page.content
    assert answer.status_code == 400 and "reauth" in field_errors(answer)
    assert LinkedWallet.objects.filter(user=lender, unlinked_at__isnull=True).count() == 1


# --- A linked wallet's calls and hashes --------------------------------------------------------------


def linked(chain, user=None):
    """A lender (or ``user``) with a linked outside account that has ETH for gas."""
    user = user or make_lender()
    account = Account.create()
    chain.fund(account.address, E18)
    issued = siwe_nonce_issue(user=user, address=account.address, domain="testserver", uri="http://testserver/")
    wallet_link(
        user=user, message=issued.message, signature=siwe_sign(issued.message, account.key), domain="testserver"
    )
    return user, account


NUMBERS = {
    "deposit-negative": ({"kind": "deposit", "amount": "-1"}, "amount"),
    "deposit-zero": ({"kind": "deposit", "amount": "0"}, "amount"),
    "deposit-too-precise": ({"kind": "deposit", "amount": "0.0000001"}, "amount"),
    "deposit-huge": ({"kind": "deposit", "amount": "1" + "0" * 30}, "amount"),
    "deposit-more-than-held": ({"kind": "deposit", "amount": "5"}, "amount"),
    "redeem-negative": ({"kind": "redeem", "shares": "-1"}, "shares"),
    "redeem-none-held": ({"kind": "redeem", "shares": "1"}, "shares"),
    "cancel-none": ({"kind": "cancel"}, "request_id"),
    "cancel-not-mine": ({"kind": "cancel", "request_id": 3}, "request_id"),
    "cancel-huge-id": ({"kind": "cancel", "request_id": HUGE}, "request_id"),
    "unknown-kind": ({"kind": "withdraw", "amount": "1"}, "kind"),
}


@pytest.mark.parametrize(("body", "field"), NUMBERS.values(), ids=NUMBERS.keys())
def test_vault_calls_refuse_bad_numbers_on_the_field(chain, body, field):
    user, _ = linked(chain)
    page = post_json(web(user), reverse("financing:wallet_vault_calls"), body)
    answer = post_json(api(user), reverse("api:own-wallet-calls"), body)
    assert page.status_code == 400, page.content[:300]
    assert field in page.json()["errors"]
    assert answer.status_code == 400, answer.content[:300]
    assert field in field_errors(answer)


SUBMITS = {
    "not-hex": ({"kind": "deposit", "tx_hash": "0x" + "g" * 64}, "tx_hash"),
    "short": ({"kind": "deposit", "tx_hash": "0x" + "a" * 63}, "tx_hash"),
    "no-0x": ({"kind": "deposit", "tx_hash": "a" * 66}, "tx_hash"),
    "fullwidth": ({"kind": "deposit", "tx_hash": "0x" + "ａ" * 64}, "tx_hash"),
    "10kb": ({"kind": "deposit", "tx_hash": "0x" + "a" * 10_000}, "tx_hash"),
    "negative-amount": ({"kind": "deposit", "tx_hash": HASH, "amount": "-3"}, "amount"),
    "negative-shares": ({"kind": "redeem", "tx_hash": HASH, "shares": "-3"}, "shares"),
    "negative-request": ({"kind": "cancel", "tx_hash": HASH, "request_id": -1}, "request_id"),
    "huge-request": ({"kind": "cancel", "tx_hash": HASH, "request_id": HUGE}, "request_id"),
}


@pytest.mark.parametrize(("body", "field"), SUBMITS.values(), ids=SUBMITS.keys())
@pytest.mark.parametrize("via", ["page", "api"])
def test_a_reported_transaction_with_bad_fields_is_refused_and_not_recorded(chain, via, body, field):
    user, _ = linked(chain)
    if via == "page":
        response = post_json(web(user), reverse("financing:wallet_vault_submit"), body)
        assert response.status_code == 400, response.content[:300]
        assert field in response.json()["errors"]
    else:
        response = post_json(api(user), reverse("api:own-wallet-operations"), body)
        assert response.status_code == 400, response.content[:300]
        assert field in field_errors(response)
    assert not WalletOperation.objects.exists()


def test_another_users_transaction_hash_is_refused(chain):
    # given two lenders with linked wallets, and a transaction the first one's wallet sent
    alice, alice_key = linked(chain)
    bob, _ = linked(chain)
    tx = unsigned_call(
        chain, sender=alice_key.address, contract="USDai", function="approve", args=[chain.addresses["SUSDai"], 1]
    )
    tx_hash = send(chain, alice_key, tx)

    # when the second one reports it as theirs, on the page and in the API
    page = post_json(web(bob), reverse("financing:wallet_vault_submit"), {"kind": "deposit", "tx_hash": tx_hash})
    answer = post_json(api(bob), reverse("api:own-wallet-operations"), {"kind": "deposit", "tx_hash": tx_hash})

    # then it is refused (sent from another address) and nothing is recorded
    assert page.status_code == 400 and "tx_hash" in page.json()["errors"]
    assert answer.status_code == 400 and "tx_hash" in field_errors(answer)
    assert not WalletOperation.objects.exists()

    # and once the first one reported it, the second one still cannot take it over
    mine = post_json(web(alice), reverse("financing:wallet_vault_submit"), {"kind": "deposit", "tx_hash": tx_hash})
    assert mine.status_code == 201
    again = post_json(api(bob), reverse("api:own-wallet-operations"), {"kind": "deposit", "tx_hash": tx_hash})
    assert again.status_code == 400 and "tx_hash" in field_errors(again)
    assert list(WalletOperation.objects.values_list("user_id", flat=True)) == [alice.pk]
    assert tx_hash not in api(bob).get(reverse("api:own-wallet")).content.decode()


def test_a_reported_hash_replayed_under_its_idempotency_key_is_one_row(chain):
    user, _ = linked(chain)
    client = api(user)
    body = {"kind": "deposit", "tx_hash": HASH, "amount": "2"}
    first = client.post(reverse("api:own-wallet-operations"), body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    second = client.post(reverse("api:own-wallet-operations"), body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    other = client.post(
        reverse("api:own-wallet-operations"), {**body, "amount": "3"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )
    assert first.status_code == 201 and second.status_code == 201 and second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert other.status_code == 409
    assert WalletOperation.objects.get().amount == Decimal("2")


# --- Sign-In with Ethereum: replayed, altered, someone else's -----------------------------------------


def test_a_message_issued_to_another_user_does_not_link(chain, lender):
    account = Account.create()
    other = make_lender()
    issued = siwe_nonce_issue(user=other, address=account.address, domain="testserver", uri="http://testserver/")
    body = {"message": issued.message, "signature": siwe_sign(issued.message, account.key)}

    page = post_json(web(lender), reverse("financing:wallet_link"), body)
    answer = post_json(api(lender), reverse("api:own-wallet"), body)

    assert page.status_code == 400 and "message" in page.json()["errors"]
    assert answer.status_code == 400 and "message" in field_errors(answer)
    assert not LinkedWallet.objects.exists() and SiweNonce.objects.get().used_at is None


ALTERED = {
    "other-domain": lambda m: m.replace("testserver wants", "evil.example wants", 1),
    "other-chain": lambda m: m.replace("Chain ID: ", "Chain ID: 1", 1),
    "other-uri": lambda m: m.replace("URI: http://testserver/", "URI: https://evil.example/", 1),
    "later-expiry": lambda m: m.replace("Expiration Time: 20", "Expiration Time: 29", 1),
    "other-statement": lambda m: m.replace("Link this", "Send all of", 1),
}


@pytest.mark.parametrize("alter", ALTERED.values(), ids=ALTERED.keys())
def test_an_altered_message_signed_by_the_right_key_does_not_link(chain, lender, alter):
    account = Account.create()
    issued = siwe_nonce_issue(user=lender, address=account.address, domain="testserver", uri="http://testserver/")
    message = alter(issued.message)
    assert message != issued.message

    response = post_json(
        web(lender),
        reverse("financing:wallet_link"),
        {"message": message, "signature": siwe_sign(message, account.key)},
    )

    assert response.status_code == 400 and "message" in response.json()["errors"]
    assert not LinkedWallet.objects.exists() and SiweNonce.objects.get().used_at is None


@pytest.mark.parametrize(
    "signature", ["0x" + "zz" * 65, "0x" + "00" * 65, "0x" + "ff" * 65, "0x" + "ab" * 64, LONG[:200], "🖊" * 50]
)
def test_a_malformed_signature_is_a_field_error(chain, lender, signature):
    account = Account.create()
    issued = siwe_nonce_issue(user=lender, address=account.address, domain="testserver", uri="http://testserver/")
    response = post_json(api(lender), reverse("api:own-wallet"), {"message": issued.message, "signature": signature})
    assert response.status_code == 400 and "signature" in field_errors(response)
    assert not LinkedWallet.objects.exists() and SiweNonce.objects.get().used_at is None


def test_a_replayed_link_is_refused_and_an_idempotent_retry_is_the_first_answer(chain, lender):
    account = Account.create()
    client = api(lender)
    issued = client.post(reverse("api:own-wallet-nonce"), {"address": account.address}, format="json").json()
    body = {"message": issued["message"], "signature": siwe_sign(issued["message"], account.key)}

    first = client.post(reverse("api:own-wallet"), body, format="json", HTTP_IDEMPOTENCY_KEY="link-1")
    retry = client.post(reverse("api:own-wallet"), body, format="json", HTTP_IDEMPOTENCY_KEY="link-1")
    replay = client.post(reverse("api:own-wallet"), body, format="json", HTTP_IDEMPOTENCY_KEY="link-2")
    stranger = post_json(api(make_lender()), reverse("api:own-wallet"), body)

    assert first.status_code == 201 and retry.status_code == 201 and retry["Idempotent-Replayed"] == "true"
    assert replay.status_code == 400 and "message" in field_errors(replay)
    assert stranger.status_code == 400
    assert LinkedWallet.objects.get().user_id == lender.pk


@pytest.mark.parametrize(
    "address",
    ["0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "0x" + "0" * 39],
    ids=["bad-checksum", "no-0x", "short"],
)
def test_a_nonce_for_a_malformed_address_is_a_field_error(lender, address):
    page = post_json(web(lender), reverse("financing:wallet_link_nonce"), {"address": address})
    answer = post_json(api(lender), reverse("api:own-wallet-nonce"), {"address": address})
    assert page.status_code == 400 and "address" in page.json()["errors"]
    assert answer.status_code == 400 and "address" in field_errors(answer)
    assert not SiweNonce.objects.exists()


def test_an_address_linked_to_someone_else_cannot_get_a_nonce(chain):
    _, account = linked(chain)
    response = post_json(api(make_lender()), reverse("api:own-wallet-nonce"), {"address": account.address})
    assert response.status_code == 400 and "address" in field_errors(response)
    assert SiweNonce.objects.count() == 1


def test_an_infrafi_address_cannot_be_linked(chain, lender):
    wallets.usdai_buy(user=lender, amount=Decimal("10.00"))  # the lender now has a custodial address
    custodial = lender.wallet.address
    response = post_json(api(lender), reverse("api:own-wallet-nonce"), {"address": custodial})
    assert response.status_code == 400 and "address" in field_errors(response)
    assert not SiweNonce.objects.exists()


@pytest.mark.parametrize("key", ["", "ключ", "k" * 256, "a\tb"])
def test_a_malformed_idempotency_key_is_a_400(lender, key):
    response = api(lender).post(
        reverse("api:own-wallet-nonce"), {"address": "0x" + "1" * 40}, format="json", HTTP_IDEMPOTENCY_KEY=key
    )
    assert response.status_code == 400 and "Idempotency-Key" in field_errors(response)
    assert not SiweNonce.objects.exists()


# --- Payouts: garbage queries, another company, plain members, CSV cells -----------------------------

GARBAGE = ["abc", "-1", "1.5", "", "²", "٣", "99999999999999999999999", "1\x00", LONG[:2000]]


@pytest.mark.parametrize("run", GARBAGE, ids=[f"run-{i}" for i in range(len(GARBAGE))])
@pytest.mark.parametrize(("name", "role"), [("owner_payouts", "owner"), ("operator_payouts", "operator")])
def test_payout_pages_survive_a_garbage_run_parameter(name, role, run):
    response = web(USERS[role]()).get(reverse(f"financing:{name}"), {"run": run})
    # a NUL byte is refused for every view at once (core.middleware.RejectNulBytesMiddleware)
    assert response.status_code in ((400,) if "\x00" in run else (200, 404)), response.status_code


def test_another_companys_payouts_and_statements_stay_hidden(renter):
    company, _ = earning_company(renter, "1000.00", payout_iban=IBAN)
    run = run_week()
    stranger = make_owner()
    mine = company.payouts.get()

    assert web(stranger).get(reverse("financing:owner_statement_csv", args=[run.pk])).status_code == 404
    assert api(stranger).get(reverse("api:owner-payout", args=[mine.pk])).status_code == 404
    assert api(stranger).get(reverse("api:owner-payout-statement", args=[run.pk])).status_code == 404
    assert api(stranger).get(reverse("api:owner-payouts")).json() == []
    page = web(stranger).get(reverse("financing:owner_payouts"), {"run": run.pk})
    assert page.status_code == 404 and IBAN.encode() not in page.content


def test_a_plain_member_cannot_change_payout_details(renter):
    company, _ = earning_company(renter, "10.00", payout_iban=IBAN)
    member = member_of(company)
    before = OwnerCompany.objects.values().get(pk=company.pk)

    response = web(member).post(reverse("accounts:company"), VALID)  # valid details: only the role is wrong

    assert response.status_code == 403
    assert OwnerCompany.objects.values().get(pk=company.pk) == before


BAD_DETAILS = {
    "iban-checksum": ({"payout_iban": "DE89370400440532013001"}, "payout_iban"),
    "iban-10kb": ({"payout_iban": LONG}, "payout_iban"),
    "iban-fullwidth": ({"payout_iban": "ＤＥ89370400440532013000"}, "payout_iban"),
    "bic-other-country": ({"payout_bic": "BNPAFRPPXXX"}, "payout_bic"),
    "bic-garbage": ({"payout_bic": "🏦🏦🏦"}, "payout_bic"),
    "vat": ({"vat_id": "DE136695977"}, "vat_id"),
    "wallet-lowercase": ({"payout_wallet_address": "0x" + "a" * 40}, "payout_wallet_address"),
    "rail": ({"payout_rail": "cash"}, "payout_rail"),
    "name-10kb": ({"name": LONG}, "name"),
    "country": ({"country": "1Z"}, "country"),
}


@pytest.mark.parametrize(("change", "field"), BAD_DETAILS.values(), ids=BAD_DETAILS.keys())
def test_bad_payout_details_are_a_form_error_and_change_nothing(owner, change, field):
    company = owner.owner_membership.company
    before = OwnerCompany.objects.values().get(pk=company.pk)

    response = web(owner).post(reverse("accounts:company"), {**VALID, **change})

    assert response.status_code == 400
    assert field in response.context["form"].errors
    assert OwnerCompany.objects.values().get(pk=company.pk) == before


def test_a_server_named_like_a_formula_is_text_in_the_statement_csv(renter):
    company, listing = earning_company(renter, "100.00", payout_iban=IBAN)
    # (the hostname validator refuses this in the forms; a row written another way must still be safe)
    Server.objects.filter(pk=listing.server_id).update(hostname='=HYPERLINK("http://evil.example","x")')
    run = run_week()
    admin = company.memberships.get().user

    body = web(admin).get(reverse("financing:owner_statement_csv", args=[run.pk])).content.decode()
    rows = list(csv.reader(io.StringIO(body)))

    assert rows[1][0] == '\'=HYPERLINK("http://evil.example","x")'
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)


def test_an_operator_marking_a_file_sent_twice_or_running_twice_books_once(renter, operator):
    earning_company(renter, "100.00", payout_iban=IBAN)
    client = web(operator)
    assert client.post(reverse("financing:operator_payout_run")).status_code == 302
    again = client.post(reverse("financing:operator_payout_run"))
    sepa_file = SepaFile.objects.exclude(xml="").get()
    entries = JournalEntry.objects.count()

    first = client.post(reverse("financing:operator_sepa_mark_sent", args=[sepa_file.pk]))
    second = client.post(reverse("financing:operator_sepa_mark_sent", args=[sepa_file.pk]))
    xml = client.get(reverse("financing:operator_sepa_download", args=[sepa_file.pk]))

    assert again.status_code == 302 and first.status_code == 302 and second.status_code == 302
    assert JournalEntry.objects.count() == entries + 1
    assert Payout.objects.get().status == Payout.Status.CONFIRMED
    assert xml.status_code == 200 and xml["Content-Disposition"].startswith("attachment;")
    assert IBAN.encode() in xml.content


@pytest.mark.parametrize("pk", [123456, HUGE])
def test_the_sepa_file_of_a_missing_id_is_404_for_an_operator(operator, pk):
    client = web(operator)
    assert client.get(reverse("financing:operator_sepa_download", args=[pk])).status_code == 404
    assert client.post(reverse("financing:operator_sepa_mark_sent", args=[pk])).status_code == 404
    for name, kwargs in (("api:owner-payout", {"pk": pk}), ("api:owner-payout-statement", {"run_id": pk})):
        assert api(make_owner()).get(reverse(name, kwargs=kwargs)).status_code == 404


@pytest.mark.parametrize("field", ["payout_account_holder", "address_line1", "name"])
def test_payout_details_with_a_control_character_are_refused(owner, field):
    # A control character is not allowed in XML 1.0: it could never reach the bank in a pain.001 file.
    company = owner.owner_membership.company
    before = OwnerCompany.objects.values().get(pk=company.pk)

    response = web(owner).post(reverse("accounts:company"), {**VALID, field: "Ada\x01Compute"})

    assert response.status_code == 400
    assert field in response.context["form"].errors
    assert OwnerCompany.objects.values().get(pk=company.pk) == before


def test_one_companys_bad_account_holder_does_not_crash_the_operators_run(renter, operator):
    # given two companies owed money by SEPA, one whose account holder was stored with a control character
    earning_company(renter, "100.00", payout_iban=IBAN, payout_account_holder="Ada\x01Compute")
    earning_company(renter, "100.00", payout_iban=IBAN)

    # when an operator runs payouts now
    response = web(operator).post(reverse("financing:operator_payout_run"))

    # then the page answers (a clear message, not a 500) and no run is left half-done
    assert response.status_code == 302, response.status_code
    assert not PayoutRun.objects.filter(status=PayoutRun.Status.RUNNING).exists()
    # and the other company's transfer still reaches a schema-valid file
    assert SepaFile.objects.exclude(xml="").exists()


# --- Wallet pages and cards -----------------------------------------------------------------------------

PAGES_Q = ["abc", "-1", "0", "99999999999", "1e9", "²", "\x00", LONG[:2000]]


@pytest.mark.parametrize("page", PAGES_Q, ids=[f"page-{i}" for i in range(len(PAGES_Q))])
def test_the_wallet_history_survives_a_garbage_page(lender, page):
    if "\x00" in page:  # refused before any view runs (RejectNulBytesMiddleware)
        assert web(lender).get(reverse("financing:wallet"), {"page": page}).status_code == 400
        return
    assert web(lender).get(reverse("financing:wallet"), {"page": page}).status_code == 200
    csv = web(lender).get(reverse("financing:wallet_history_csv"), {"page": page})
    assert csv.status_code == 200 and csv["Content-Type"].startswith("text/csv")


def test_the_wallet_history_shows_no_one_elses_rows(renter):
    company, _ = earning_company(renter, "100.00", payout_wallet_address="0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
    run_week()
    buyer, snoop = make_lender(), make_lender()
    wallets.usdai_buy(user=buyer, amount=Decimal("42.00"))
    member = company.memberships.get().user

    mine = web(buyer).get(reverse("financing:wallet_history_csv")).content.decode()
    theirs = web(snoop).get(reverse("financing:wallet_history_csv")).content.decode()
    stranger = web(make_owner()).get(reverse("financing:wallet_history_csv")).content.decode()
    owners = web(member).get(reverse("financing:wallet_history_csv")).content.decode()

    assert "42.00" in mine and "purchase" in mine
    assert theirs.splitlines()[1:] == [] and stranger.splitlines()[1:] == []
    assert "payout" in owners


@pytest.mark.parametrize(
    "purchase", ["²", "99999999999999999999999", "-1", "abc"], ids=["superscript-two", "huge", "negative", "letters"]
)
def test_the_wallet_page_in_card_mode_survives_a_garbage_purchase(stripe_mode, purchase):
    user = make_lender()
    assert web(user).get(reverse("financing:wallet"), {"purchase": purchase}).status_code == 200
    response = web(user).get(reverse("financing:wallet"), {"purchase": purchase, "payment_intent": "pi_x"})
    assert response.status_code in (200, 302)


def test_another_users_card_purchase_is_neither_shown_nor_settled(stripe_mode):
    buyer, snoop = make_lender(), make_lender()
    purchase = wallets.usdai_buy_start(user=buyer, amount=Decimal("25.00"))
    intent = stripe_mode_intent(purchase)

    page = web(snoop).get(reverse("financing:wallet"), {"purchase": purchase.pk})
    back = web(snoop).get(reverse("financing:wallet"), {"purchase": purchase.pk, "payment_intent": purchase.reference})

    assert page.status_code == 200 and intent.encode() not in page.content
    assert purchase.reference.encode() not in page.content
    assert back.status_code == 302
    purchase.refresh_from_db()
    assert purchase.status == UsdaiPurchase.Status.PENDING


def stripe_mode_intent(purchase) -> str:
    """The client secret of ``purchase``'s PaymentIntent, as the buyer's page would get it."""
    card = wallets.usdai_purchase_card(user=purchase.user, purchase_id=purchase.pk)
    assert card is not None and card.client_secret
    return card.client_secret


@pytest.fixture
def booking_of(owner):
    def _make(renter):
        listing = make_listing(owner, price="3.25", gpu_count=2)
        start = next_hour(2)
        return bookings.booking_create(
            renter=renter, listing=listing, gpu_count=2, start=start, end=start + timedelta(hours=4)
        )

    return _make


def test_another_renters_checkout_return_and_invoice_are_404(renter, booking_of):
    theirs = booking_of(make_renter())
    client = web(renter)
    for name in ("checkout", "checkout_return", "invoice"):
        assert client.get(reverse(f"marketplace:{name}", args=[theirs.public_id])).status_code == 404, name
    assert client.post(reverse("marketplace:checkout", args=[theirs.public_id]), {}).status_code == 404
    theirs.refresh_from_db()
    assert theirs.status == theirs.Status.PENDING_PAYMENT


@pytest.mark.parametrize(
    "reference", ["", "pi_not_mine", LONG, "pi_\x00", "💳"], ids=["empty", "unknown", "10kb", "nul", "emoji"]
)
def test_a_checkout_return_with_a_foreign_or_bad_reference_is_a_message(renter, booking_of, reference):
    mine = booking_of(renter)
    response = web(renter).get(
        reverse("marketplace:checkout_return", args=[mine.public_id]), {"payment_intent": reference}
    )
    if "\x00" in reference:
        assert response.status_code == 400  # refused before any view runs (RejectNulBytesMiddleware)
    else:
        assert response.status_code == 302
        assert response["Location"] == reverse("marketplace:checkout", args=[mine.public_id])
    mine.refresh_from_db()
    assert mine.status == mine.Status.PENDING_PAYMENT


def test_a_checkout_return_with_another_bookings_payment_intent_does_not_pay_it(
    stripe_mode, settings, renter, booking_of
):
    mine, theirs = booking_of(renter), booking_of(make_renter())
    theirs_pi = bookings.booking_card_payment(booking=theirs, renter=theirs.renter).reference

    response = web(renter).get(
        reverse("marketplace:checkout_return", args=[mine.public_id]), {"payment_intent": theirs_pi}
    )

    assert response.status_code == 302
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert (mine.status, theirs.status) == (mine.Status.PENDING_PAYMENT, theirs.Status.PENDING_PAYMENT)

    # and the renter's own checkout page carries neither the server's secrets nor the other intent
    page = web(renter).get(reverse("marketplace:checkout", args=[mine.public_id])).content.decode()
    assert settings.STRIPE_SECRET_KEY not in page and settings.STRIPE_WEBHOOK_SECRET not in page
    assert theirs_pi not in page


@pytest.mark.parametrize("method", [LONG, "pm_\x00", "💳" * 101])
def test_a_checkout_with_a_malformed_payment_method_is_a_form_error(renter, booking_of, method):
    mine = booking_of(renter)
    response = web(renter).post(reverse("marketplace:checkout", args=[mine.public_id]), {"payment_method": method})
    assert response.status_code == 400
    mine.refresh_from_db()
    assert mine.status == mine.Status.PENDING_PAYMENT and not mine.payments.exists()


@pytest.mark.parametrize("card", ["", LONG, "pm_\x00"])
def test_removing_a_bad_card_reference_is_a_form_error(renter, card):
    response = web(renter).post(reverse("marketplace:cards"), {"card": card})
    assert response.status_code == 400


def test_a_renter_cannot_remove_another_renters_card(stripe_mode, stripe_client, renter):
    other = make_renter()
    setup = cards.card_setup_start(user=other)
    stripe_client.v1.setup_intents.confirm(
        setup.reference,
        params={
            "payment_method_data": {
                "type": "card",
                "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"},
            }
        },
    )
    (card,) = saved_cards(user=other)
    cards.card_setup_start(user=renter)  # the snoop has a Customer too

    response = web(renter).post(reverse("marketplace:cards"), {"card": card.reference})

    assert response.status_code == 400
    assert [c.reference for c in saved_cards(user=other)] == [card.reference]
