"""A lender's own wallet in a real browser: Chromium with an EIP-1193 provider injected before
the page loads, backed by an unlocked account of the Hardhat 2 node (the app's chain too).

The provider's ``request({method, params})`` goes to Python (``page.expose_function``) and on
to the node as JSON-RPC, as a browser wallet would send it; ``eth_requestAccounts`` answers
the one account the "wallet" holds. Flow: link it with Sign-In with Ethereum, deposit signed
in the page (approve, then deposit), the page shows it pending, the chain watcher runs, and
the reloaded page shows it credited with the shares at the linked address."""

import json
import threading
import urllib.request
from decimal import Decimal

import pytest
from django.db import connections

from financing.chain import node as chain_node
from financing.chain.client import address_for, rpc_chain
from financing.chain.deploy import deploy
from financing.models import ChainDeployment, LinkedWallet, WalletOperation
from financing.services.chain_watch import chain_watch
from financing.services.reconcile import chain_reconcile
from financing.services.wallets import usdai_buy, usdai_withdraw
from tests.chain_fixtures import drain
from tests.factories import PASSWORD, make_lender
from tests.hardhat_node import HARDHAT_KEYS
from tests.test_browser import ARTIFACTS, app_server, browser_page  # noqa: F401 - fixtures

pytestmark = pytest.mark.browser

PROVIDER = """
(() => {
  const listeners = {};
  window.ethereum = {
    isTestWallet: true,
    request: async ({ method, params }) => {
      const answer = JSON.parse(await window.__walletRpc(method, JSON.stringify(params || [])));
      if (answer.error) { const e = new Error(answer.error.message); e.code = answer.error.code; throw e; }
      return answer.result;
    },
    on: (name, fn) => { (listeners[name] = listeners[name] || []).push(fn); },
    removeListener: () => {},
  };
})();
"""


def _rpc(url: str, method: str, params: list) -> dict:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _in_a_thread(fn):
    """Run ORM work outside Playwright's greenlet, on a connection of its own that is closed after."""
    out = {}

    def run():
        try:
            out["result"] = fn()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    return out["result"]


@pytest.fixture
def funded_wallet(catalogue, hardhat_rpc_url, settings, request):
    """The app's chain on the Hardhat node (fresh contracts) and a lender whose own wallet, an
    unlocked Hardhat account, holds 100 USDai sent out from their custodial wallet. Seeded
    before Playwright starts (inside its sync API the ORM would run in its event loop)."""
    settings.CHAIN_RPC_URL = hardhat_rpc_url
    settings.CHAIN_SIGNER_KEY = HARDHAT_KEYS[0]
    chain_node.chain_reset()
    request.addfinalizer(chain_node.chain_reset)
    node = rpc_chain(hardhat_rpc_url)
    node.use(deploy(node))
    ChainDeployment.objects.create(
        chain_id=node.chain_id, addresses=node.addresses, operator=address_for(0), genesis_hash=node.genesis_hash()
    )
    account = node.w3.eth.accounts[13]
    lender = make_lender()
    usdai_buy(user=lender, amount=Decimal("100"))
    usdai_withdraw(user=lender, address=account, amount=Decimal("100"))
    assert drain()["failed"] == 0
    return lender, account


@pytest.mark.django_db(transaction=True)
def test_a_lender_links_a_wallet_and_deposits_signing_in_the_browser(
    funded_wallet,
    app_server,  # noqa: F811
    hardhat_rpc_url,
    browser_page,  # noqa: F811
):
    # given a lender whose own wallet holds 100 USDai (funded_wallet)
    lender, account = funded_wallet
    page = browser_page

    def wallet_rpc(method: str, params: str) -> str:
        if method in ("eth_requestAccounts", "eth_accounts"):
            return json.dumps({"result": [account]})
        return json.dumps(_rpc(hardhat_rpc_url, method, json.loads(params)))

    page.expose_function("__walletRpc", wallet_rpc)
    page.add_init_script(PROVIDER)

    # when the lender logs in and links the wallet from the vault page
    page.goto(app_server.url + "/accounts/login/")
    page.fill("input[name=login]", lender.email)
    page.fill("input[name=password]", PASSWORD)
    page.locator("form button[type=submit]").first.click()
    page.wait_for_url("**/lender/**")
    page.goto(app_server.url + "/lender/vault/")
    page.locator("#link-wallet").click()
    page.wait_for_selector("#linked-address", timeout=15_000)
    assert page.locator("#linked-address").inner_text() == account

    # and deposits 40 USDai signed in the page (approve, then deposit)
    page.fill("#own-deposit-amount", "40")
    page.locator("#own-deposit").click()
    page.wait_for_selector("#wallet-operations .wallet-op-pending", timeout=15_000)
    assert "Pending" in page.locator("#wallet-operations").inner_text()

    # then the watcher credits it, once; the reloaded page shows it credited, the shares at the address
    assert _in_a_thread(lambda: chain_watch().applied) == 1
    assert _in_a_thread(lambda: chain_watch().applied) == 0
    page.reload()
    page.wait_for_selector("#wallet-operations .wallet-op-confirmed")
    assert "Credited" in page.locator("#wallet-operations").inner_text()
    assert page.locator("#own-usdai").inner_text() == "60.00 USDai"
    assert page.locator("#own-shares").inner_text() != "0.000000"
    page.screenshot(path=str(ARTIFACTS / "vault-own-wallet.png"), full_page=True)
    state = _in_a_thread(
        lambda: (
            LinkedWallet.objects.get(user=lender).address,
            list(WalletOperation.objects.filter(user=lender).values_list("kind", "status", "amount")),
        )
    )
    assert state == (account, [("deposit", "confirmed", Decimal("40.000000"))])
    mismatches = _in_a_thread(lambda: [c["name"] for c in chain_reconcile().checks if not c["ok"]])
    assert mismatches == []
