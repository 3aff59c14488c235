"""Linking an outside address with Sign-In with Ethereum (EIP-4361), and the password or the
second factor asked again before USDai leaves or a link ends: the page's JSON calls and the
API, each refusal a field error with nothing written."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from allauth.mfa.totp.internal.auth import TOTP
from django.urls import reverse
from django.utils import timezone
from eth_account import Account

from financing.chain.siwe import siwe_parse, siwe_sign
from financing.models import ChainOp, LinkedWallet, SiweNonce
from financing.selectors.ledger import usdai_balance
from financing.services.wallets import usdai_buy
from tests.api_errors import field_errors
from tests.factories import PASSWORD, make_lender
from tests.test_accounts import totp_now

pytestmark = pytest.mark.django_db
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
OUTSIDE = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def post_json(client, name, body):
    return client.post(reverse(name), data=json.dumps(body), content_type="application/json")


def nonce(client, address: str) -> str:
    response = post_json(client, "financing:wallet_link_nonce", {"address": address})
    assert response.status_code == 200, response.content
    return response.json()["message"]


def link_errors(client, message: str, signature: str) -> dict:
    response = post_json(client, "financing:wallet_link", {"message": message, "signature": signature})
    assert response.status_code == 400, response.content
    return response.json()["errors"]


def test_a_lender_links_an_address_by_signing_the_issued_message(chain, lender, client_as, api_as):
    # given a lender and the key of an outside account
    account = Account.create()
    client = client_as(lender)

    # when the page asks for the message and the wallet signs it
    message = nonce(client, account.address.lower())
    parsed = siwe_parse(message)
    response = post_json(
        client, "financing:wallet_link", {"message": message, "signature": siwe_sign(message, account.key)}
    )

    # then the message carried every field EIP-4361 asks, and the address is linked to the lender
    assert response.status_code == 200 and response.json() == {"address": account.address}
    assert (parsed.domain, parsed.address, parsed.chain_id, parsed.uri) == (
        "testserver",
        account.address,
        chain.chain_id,
        "http://testserver/",
    )
    assert parsed.expiration_time - parsed.issued_at == timedelta(seconds=300)
    link = LinkedWallet.objects.get(user=lender, unlinked_at__isnull=True)
    assert link.address == account.address and link.proof.used_at is not None
    body = api_as(lender).get(reverse("api:own-wallet")).json()
    assert body["linked"]["address"] == account.address and body["operations"] == []
    assert account.address in client.get(reverse("financing:wallet")).content.decode()


def test_the_api_links_with_the_same_checks(chain, lender, api_as):
    account = Account.create()
    api = api_as(lender)

    issued = api.post(reverse("api:own-wallet-nonce"), {"address": account.address}, format="json")
    assert issued.status_code == 201
    message = issued.json()["message"]
    wrong = api.post(
        reverse("api:own-wallet"),
        {"message": message, "signature": siwe_sign(message, Account.create().key)},
        format="json",
    )
    ok = api.post(
        reverse("api:own-wallet"), {"message": message, "signature": siwe_sign(message, account.key)}, format="json"
    )

    assert wrong.status_code == 400 and "signature" in field_errors(wrong)
    assert ok.status_code == 201 and ok.json()["address"] == account.address


def test_an_expired_nonce_is_refused(chain, lender, client_as):
    account = Account.create()
    client = client_as(lender)
    message = nonce(client, account.address)
    SiweNonce.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    errors = link_errors(client, message, siwe_sign(message, account.key))

    assert errors == {"message": ["This sign-in request expired; start again."]}
    assert not LinkedWallet.objects.exists() and SiweNonce.objects.get().used_at is None


def test_a_replayed_nonce_is_refused(chain, lender, client_as):
    # given an address linked and then unlinked (so the address and the lender are free again)
    account = Account.create()
    client = client_as(lender)
    message = nonce(client, account.address)
    signature = siwe_sign(message, account.key)
    assert post_json(client, "financing:wallet_link", {"message": message, "signature": signature}).status_code == 200
    assert client.post(reverse("financing:wallet_unlink"), {"reauth": PASSWORD}).status_code == 302

    # when the same signed message is sent again
    errors = link_errors(client, message, signature)

    # then it is refused, and nothing new is linked
    assert errors == {"message": ["This sign-in request was used already; start again."]}
    assert not LinkedWallet.objects.filter(unlinked_at__isnull=True).exists()


def test_a_signature_from_another_address_is_refused(chain, lender, client_as):
    account, other = Account.create(), Account.create()
    client = client_as(lender)
    message = nonce(client, account.address)

    errors = link_errors(client, message, siwe_sign(message, other.key))
    malformed = link_errors(client, message, "0x1234")

    assert errors == {"signature": [f"The signature is from another address ({other.address}), not {account.address}."]}
    assert list(malformed) == ["signature"]
    assert not LinkedWallet.objects.exists()


@pytest.mark.parametrize(
    "old, new, reason",
    [
        ("testserver wants", "evil.example wants", "This message was issued for another site (evil.example)."),
        ("Chain ID: {chain}", "Chain ID: 1", "This message is for chain 1, not InfraFi's chain."),
        (
            "Nonce: {nonce}",
            "Nonce: 0000000000abcdef",
            "Unknown sign-in request (its nonce is not one we gave you); start again.",
        ),
        ("Link this", "Give away", "The message was changed after it was issued; start again."),
    ],
)
def test_a_tampered_message_is_refused_even_when_signed_by_the_address(chain, lender, client_as, old, new, reason):
    # given the issued message changed (and signed as changed, by the right key)
    account = Account.create()
    client = client_as(lender)
    message = nonce(client, account.address)
    fields = {"chain": chain.chain_id, "nonce": siwe_parse(message).nonce}
    tampered = message.replace(old.format(**fields), new.format(**fields), 1)
    assert tampered != message

    errors = link_errors(client, tampered, siwe_sign(tampered, account.key))

    assert errors == {"message": [reason]}
    assert not LinkedWallet.objects.exists()
    garbage = link_errors(client, "hello", siwe_sign("hello", account.key))
    assert list(garbage) == ["message"]


def test_an_address_already_linked_is_refused_to_another_user(chain, lender, client_as):
    account = Account.create()
    first = client_as(lender)
    message = nonce(first, account.address)
    assert (
        post_json(
            first, "financing:wallet_link", {"message": message, "signature": siwe_sign(message, account.key)}
        ).status_code
        == 200
    )

    other = client_as(make_lender())
    response = post_json(other, "financing:wallet_link_nonce", {"address": account.address})
    second = post_json(first, "financing:wallet_link_nonce", {"address": Account.create().address})

    assert response.status_code == 400
    assert response.json()["errors"] == {"address": ["This address is already linked to an account."]}
    assert second.json()["errors"] == {"address": ["You already have a linked wallet; unlink it first."]}
    assert LinkedWallet.objects.count() == 1


def test_a_platform_address_is_refused(chain, lender, client_as):
    usdai_buy(user=lender, amount=Decimal("1"))
    custodial = lender.wallet.address
    client = client_as(lender)

    for address in (custodial, chain.addresses["SUSDai"]):
        response = post_json(client, "financing:wallet_link_nonce", {"address": address})
        assert response.status_code == 400
        assert response.json()["errors"] == {
            "address": ["That is an InfraFi address; link a wallet you hold the key of."]
        }
    bad = post_json(client, "financing:wallet_link_nonce", {"address": "0x1234"})
    assert bad.status_code == 400 and list(bad.json()["errors"]) == ["address"]
    assert not SiweNonce.objects.exists()


def _linked(client, user):
    account = Account.create()
    message = nonce(client, account.address)
    assert (
        post_json(
            client, "financing:wallet_link", {"message": message, "signature": siwe_sign(message, account.key)}
        ).status_code
        == 200
    )
    return account


def test_unlinking_needs_the_password_again(chain, lender, client_as, api_as):
    client = client_as(lender)
    _linked(client, lender)

    missing = client.post(reverse("financing:wallet_unlink"), {"reauth": ""})
    wrong = client.post(reverse("financing:wallet_unlink"), {"reauth": "not-it"})
    api_wrong = api_as(lender).post(reverse("api:own-wallet-unlink"), {"reauth": "not-it"}, format="json")

    assert missing.status_code == 400 and "Enter your password to confirm." in missing.content.decode()
    assert wrong.status_code == 400 and "That is not your password." in wrong.content.decode()
    assert api_wrong.status_code == 400 and field_errors(api_wrong) == {"reauth": ["That is not your password."]}
    assert LinkedWallet.objects.filter(user=lender, unlinked_at__isnull=True).exists()

    ok = client.post(reverse("financing:wallet_unlink"), {"reauth": PASSWORD})
    assert ok.status_code == 302
    assert not LinkedWallet.objects.filter(user=lender, unlinked_at__isnull=True).exists()


def test_unlinking_needs_a_current_code_with_totp(chain, lender, client_as, api_as):
    TOTP.activate(lender, TOTP_SECRET)
    client = client_as(lender)
    _linked(client, lender)
    code = totp_now(TOTP_SECRET)

    password = api_as(lender).post(reverse("api:own-wallet-unlink"), {"reauth": PASSWORD}, format="json")
    ok = api_as(lender).post(reverse("api:own-wallet-unlink"), {"reauth": code}, format="json")

    assert password.status_code == 400 and list(field_errors(password)) == ["reauth"]
    assert ok.status_code == 200
    assert not LinkedWallet.objects.filter(user=lender, unlinked_at__isnull=True).exists()


def test_sending_usdai_out_needs_the_password_again_on_the_page_and_the_api(chain, lender, client_as, api_as):
    usdai_buy(user=lender, amount=Decimal("100"))
    client = client_as(lender)
    page = {"action": "send", "send-address": OUTSIDE, "send-amount": "10"}
    ops = ChainOp.objects.count()

    refused = client.post(reverse("financing:wallet"), page)
    wrong = client.post(reverse("financing:wallet"), page | {"send-reauth": "nope"})
    url = reverse("api:wallet-usdai-withdrawals")
    api_refused = api_as(lender).post(url, {"address": OUTSIDE, "amount": "10"}, format="json")

    assert refused.status_code == 400 and "Enter your password to confirm." in refused.content.decode()
    assert wrong.status_code == 400 and "That is not your password." in wrong.content.decode()
    assert api_refused.status_code == 400 and field_errors(api_refused) == {
        "reauth": ["Enter your password to confirm."]
    }
    assert ChainOp.objects.count() == ops and usdai_balance(user=lender) == Decimal("100")

    sent = client.post(reverse("financing:wallet"), page | {"send-reauth": PASSWORD})
    api_sent = api_as(lender).post(url, {"address": OUTSIDE, "amount": "5", "reauth": PASSWORD}, format="json")
    assert sent.status_code == 302 and api_sent.status_code == 201
    assert usdai_balance(user=lender) == Decimal("85")
