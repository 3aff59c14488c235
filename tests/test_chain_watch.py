"""Users' own wallets on the in-process EVM: an outside account signs its own vault calls
(built by ``wallet_calls``), the page's pending rows, and the watcher crediting each event
once, with the chain and the books reconciled to the wei."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from eth_account import Account

from financing.chain.client import usd_to_wei
from financing.chain.own_wallets import contract_logs, unsigned_call
from financing.chain.siwe import siwe_sign
from financing.models import ChainEvent, JournalEntry, LinkedWallet, Redemption, WalletOperation
from financing.selectors.ledger import usdai_balance
from financing.selectors.vault import lender_pnl, redemption_estimate, vault_position
from financing.selectors.wallet_history import wallet_history
from financing.selectors.wallet_links import own_wallet_position
from financing.services import chain_watch as watch
from financing.services.liquidity import queued_redemptions
from financing.services.reconcile import chain_reconcile
from financing.services.vault import redemption_request, vault_deposit, vault_service
from financing.services.wallet_links import siwe_nonce_issue, wallet_calls, wallet_link, wallet_operation_submit
from financing.services.wallets import usdai_buy, usdai_withdraw
from tests.api_errors import field_errors
from tests.chain_fixtures import drain
from tests.concurrency import race
from tests.factories import make_lender

pytestmark = pytest.mark.django_db
E18 = 10**18


def outsider(chain, usdai: str = "0", *, via=None):
    """A fresh outside account with ETH for gas and ``usdai`` sent to it from ``via``'s custodial wallet."""
    account = Account.create()
    chain.fund(account.address, E18)
    if Decimal(usdai):
        usdai_buy(user=via, amount=Decimal(usdai))
        usdai_withdraw(user=via, address=account.address, amount=Decimal(usdai))
        assert drain()["failed"] == 0
    return account


def send(chain, account, tx) -> str:
    """What the user's wallet does with an unsigned call: nonce, gas, fees, sign, broadcast."""
    tip = 10**9
    signed = Account.sign_transaction(
        {
            "to": tx.to,
            "data": tx.data,
            "value": 0,
            "nonce": chain.w3.eth.get_transaction_count(account.address),
            "gas": 500_000,
            "maxFeePerGas": chain.base_fee() * 2 + tip,
            "maxPriorityFeePerGas": tip,
            "chainId": chain.chain_id,
            "type": 2,
        },
        account.key,
    )
    chain.broadcast("0x" + signed.raw_transaction.hex().removeprefix("0x"))
    return "0x" + signed.hash.hex().removeprefix("0x")


def link(user, account):
    issued = siwe_nonce_issue(user=user, address=account.address, domain="testserver", uri="http://testserver/")
    return wallet_link(
        user=user, message=issued.message, signature=siwe_sign(issued.message, account.key), domain="testserver"
    )


def reconciled() -> list[dict]:
    report = chain_reconcile()
    return [c for c in report.checks if not c["ok"]]


def test_a_deposit_signed_by_the_linked_wallet_is_pending_then_credited_once(chain, lender):
    # given a lender whose own wallet holds 100 USDai (sent out from their custodial wallet) and is linked
    account = outsider(chain, "100", via=lender)
    link(lender, account)
    assert reconciled() == []

    # when the wallet signs the approve and the deposit the server built, and the page posts the hash
    calls = wallet_calls(user=lender, kind="deposit", amount=Decimal("60"))
    assert [c.label for c in calls] == ["Allow the vault to take 60 USDai", "Deposit 60 USDai"]
    assert {c.sender for c in calls} == {account.address} and all(c.value == "0x0" for c in calls)
    hashes = [send(chain, account, tx) for tx in calls]
    op = wallet_operation_submit(user=lender, kind="deposit", tx_hash=hashes[1], amount=Decimal("60"))

    # then it is pending and nothing is booked yet; the wallet history says so
    assert op.status == WalletOperation.Status.PENDING
    entry = wallet_history(user=lender)[0]
    assert (entry.kind, entry.state, entry.amount, entry.reference) == ("deposit", "pending", Decimal(-60), hashes[1])
    entries = JournalEntry.objects.count()

    # when the watcher runs twice
    first = watch.chain_watch()
    second = watch.chain_watch()

    # then the deposit is credited once: one event, one entry, the shares at the linked address
    op.refresh_from_db()
    assert (first.applied, second.applied) == (1, 0)
    assert op.status == WalletOperation.Status.CONFIRMED and op.amount == Decimal("60")
    assert wallet_history(user=lender)[0].state == "confirmed"
    held = chain.call("SUSDai", "balanceOf", account.address)
    assert op.shares == Decimal(held) / E18 and held > 0
    assert JournalEntry.objects.count() == entries + 1
    assert ChainEvent.objects.filter(key=f"{hashes[1]}:{op.event.log_index}").count() == 1

    # and the same log applied again (a re-read range, a second watcher) changes nothing
    logs = contract_logs(chain, from_block=0, to_block=chain.head(), names=watch.WATCHED)
    deposit_log = next(log for log in logs if log.event == "Deposit" and log.tx_hash == hashes[1])
    assert watch._apply(chain.chain_id, deposit_log, watch._addresses()) == 0
    assert JournalEntry.objects.count() == entries + 1

    # and the chain matches the books; the vault page's position counts the linked shares
    assert reconciled() == []
    position = vault_position(user=lender)
    own = own_wallet_position(user=lender, position=position, pnl=lender_pnl(user=lender, position=position))
    assert own.shares == Decimal(held) / E18 and own.deposited == Decimal("60") and own.usdai == Decimal("40")
    assert own.total_value == own.value and own.total_pnl == own.value - Decimal("60")


def test_a_linked_wallet_queues_cancels_and_is_paid_by_the_queue(chain, lender):
    # given 50 USDai deposited from the linked wallet and credited
    account = outsider(chain, "50", via=lender)
    link(lender, account)
    for tx in wallet_calls(user=lender, kind="deposit", amount=Decimal("50")):
        send(chain, account, tx)
    watch.chain_watch()
    held = chain.call("SUSDai", "balanceOf", account.address)

    # when it queues 20 sUSDai for redemption and the watcher runs
    (tx,) = wallet_calls(user=lender, kind="redeem", shares_amount=Decimal("20"))
    wallet_operation_submit(user=lender, kind="redeem", tx_hash=send(chain, account, tx), shares_amount=Decimal("20"))
    watch.chain_watch()

    # then the request is credited with its queue id, the shares escrowed
    request = WalletOperation.objects.get(user=lender, kind="redeem")
    assert request.status == "confirmed" and request.shares_left == Decimal("20") and request.request_id is not None
    assert chain.call("SUSDai", "balanceOf", account.address) == held - 20 * E18

    # when it cancels the request
    (tx,) = wallet_calls(user=lender, kind="cancel", request_id=request.request_id)
    wallet_operation_submit(user=lender, kind="cancel", tx_hash=send(chain, account, tx), request_id=request.request_id)
    watch.chain_watch()

    # then the shares are back and the request has none left; nothing was booked for either
    request.refresh_from_db()
    assert request.shares_left == 0
    assert WalletOperation.objects.get(user=lender, kind="cancel").status == "confirmed"
    assert chain.call("SUSDai", "balanceOf", account.address) == held
    assert reconciled() == []

    # when it queues 10 again and the operator's service pays the queue
    (tx,) = wallet_calls(user=lender, kind="redeem", shares_amount=Decimal("10"))
    send(chain, account, tx)
    watch.chain_watch()
    usdai_before = chain.call("USDai", "balanceOf", account.address)
    # the liquidity the vault keeps for its queue counts the linked wallet's request
    assert queued_redemptions() == Decimal("10")
    assert vault_service() is not None  # the queue is one: linked wallets' requests are served too
    assert vault_service() is None  # one in flight
    assert drain()["failed"] == 0
    watch.chain_watch()
    watch.chain_watch()

    # then the payment is credited once, the request has no shares left, and the books match the chain
    paid = WalletOperation.objects.get(user=lender, kind="redeem_paid")
    assert paid.status == "confirmed" and paid.amount == Decimal("10")
    assert chain.call("USDai", "balanceOf", account.address) == usdai_before + 10 * E18
    assert WalletOperation.objects.get(user=lender, kind="redeem", shares_left=0, paid=Decimal("10"))
    assert reconciled() == []


def test_usdai_sent_from_outside_to_a_custodial_address_is_credited_once(chain, lender):
    # given an outside account holding 30 USDai (from another user's withdrawal) and a lender's custodial wallet
    other = make_lender()
    account = outsider(chain, "30", via=other)
    usdai_buy(user=lender, amount=Decimal("5"))
    drain()
    custodial = lender.wallet.address

    # when the outside account sends 12.5 USDai to the lender's custodial address
    send(
        chain,
        account,
        unsigned_call(
            chain,
            sender=account.address,
            contract="USDai",
            function="transfer",
            args=[custodial, usd_to_wei(Decimal("12.5"))],
        ),
    )
    watch.chain_watch()
    watch.chain_watch()

    # then the lender's balance is credited once, shown as received, and the books match the chain
    assert usdai_balance(user=lender) == Decimal("17.5")
    received = WalletOperation.objects.get(user=lender, kind="received")
    assert received.amount == Decimal("12.5") and received.address == custodial and received.status == "confirmed"
    assert reconciled() == []


def test_a_reverted_transaction_fails_its_pending_row_and_books_nothing(chain, lender):
    # given a linked wallet with 10 USDai that deposits without approving first (the call reverts)
    account = outsider(chain, "10", via=lender)
    link(lender, account)
    deposit = wallet_calls(user=lender, kind="deposit", amount=Decimal("10"))[-1]
    tx_hash = send(chain, account, deposit)
    op = wallet_operation_submit(user=lender, kind="deposit", tx_hash=tx_hash, amount=Decimal("10"))
    entries = JournalEntry.objects.count()

    # when the watcher runs
    report = watch.chain_watch()

    # then the row is failed with the reason, and nothing was booked
    op.refresh_from_db()
    assert report.failed == 1 and op.status == WalletOperation.Status.FAILED
    assert "reverted on chain" in op.failure_message
    assert JournalEntry.objects.count() == entries and not ChainEvent.objects.exists()
    assert chain.call("USDai", "balanceOf", account.address) == 10 * E18
    assert reconciled() == []


def test_the_api_builds_the_calls_and_records_the_hash_once(chain, lender, api_as):
    # given a linked wallet holding 20 USDai
    account = outsider(chain, "20", via=lender)
    link(lender, account)
    api = api_as(lender)

    # when the API is asked for a deposit above the wallet's balance, and then for 20
    too_much = api.post(reverse("api:own-wallet-calls"), {"kind": "deposit", "amount": "25"}, format="json")
    built = api.post(reverse("api:own-wallet-calls"), {"kind": "deposit", "amount": "20"}, format="json")

    # then the first is a field error, the second the approve and the deposit from the linked address
    assert too_much.status_code == 400 and field_errors(too_much) == {"amount": ["Your wallet holds 20.00 USDai."]}
    assert built.status_code == 200
    assert [t["label"] for t in built.json()] == ["Allow the vault to take 20 USDai", "Deposit 20 USDai"]
    assert {t["sender"] for t in built.json()} == {account.address}
    assert built.json()[1]["to"] == chain.addresses["SUSDai"]

    # when the wallet sends them and the hash is reported twice, and a hash from someone else once
    calls = wallet_calls(user=lender, kind="deposit", amount=Decimal("20"))
    hashes = [send(chain, account, tx) for tx in calls]
    url = reverse("api:own-wallet-operations")
    first = api.post(url, {"kind": "deposit", "tx_hash": hashes[1], "amount": "20"}, format="json")
    again = api.post(
        url, {"kind": "deposit", "tx_hash": hashes[1].upper().replace("0X", "0x"), "amount": "20"}, format="json"
    )
    stranger = outsider(chain)
    foreign = send(
        chain,
        stranger,
        unsigned_call(chain, sender=stranger.address, contract="USDai", function="approve", args=[stranger.address, 1]),
    )
    refused = api.post(url, {"kind": "deposit", "tx_hash": foreign}, format="json")
    malformed = api.post(url, {"kind": "deposit", "tx_hash": "0x1234"}, format="json")

    # then one pending row; the stranger's and the malformed hash are field errors
    assert first.status_code == 201 and first.json()["status"] == "pending"
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    assert field_errors(refused) == {
        "tx_hash": [f"That transaction was sent from {stranger.address}, not your linked wallet."]
    }
    assert list(field_errors(malformed)) == ["tx_hash"]
    assert WalletOperation.objects.filter(user=lender).count() == 1

    # and once the watcher has run, the API lists it credited
    watch.chain_watch()
    body = api.get(reverse("api:own-wallet")).json()
    listed = body["operations"]
    assert [(o["kind"], o["status"], o["amount"]) for o in listed] == [("deposit", "confirmed", "20.000000")]
    held = chain.call("SUSDai", "balanceOf", account.address)
    assert body["position"]["shares"] == f"{Decimal(held) / E18:.18f}" and body["position"]["deposited"] == "20.000000"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_watchers_racing_on_the_same_event_credit_it_once(catalogue, chain):
    # given a linked wallet's deposit on chain, not yet applied
    lender = make_lender()
    account = outsider(chain, "30", via=lender)
    link(lender, account)
    hashes = [send(chain, account, tx) for tx in wallet_calls(user=lender, kind="deposit", amount=Decimal("30"))]
    logs = contract_logs(chain, from_block=0, to_block=chain.head(), names=watch.WATCHED)
    deposit = next(log for log in logs if log.event == "Deposit" and log.tx_hash == hashes[-1])
    addresses = watch._addresses()
    entries = JournalEntry.objects.count()

    # when four watchers apply it at the same moment
    applied = []
    outcomes = race(4, lambda i: applied.append(watch._apply(chain.chain_id, deposit, addresses)))

    # then one of them applied it: one event, one ledger entry, one credited operation
    assert outcomes == ["ok"] * 4 and sorted(applied) == [0, 0, 0, 1]
    assert JournalEntry.objects.count() == entries + 1
    assert ChainEvent.objects.count() == 1
    assert WalletOperation.objects.get(user=lender).status == "confirmed"
    assert reconciled() == []


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_users_linking_one_address_at_once_link_it_once(catalogue, chain):
    # given two lenders, each holding a message for the same address, signed by its key
    account = Account.create()
    lenders = [make_lender(), make_lender()]
    signed = []
    for user in lenders:
        issued = siwe_nonce_issue(user=user, address=account.address, domain="testserver", uri="http://testserver/")
        signed.append((issued.message, siwe_sign(issued.message, account.key)))

    # when both link at the same moment
    outcomes = race(
        2,
        lambda i: wallet_link(user=lenders[i], message=signed[i][0], signature=signed[i][1], domain="testserver"),
    )

    # then one link exists; the other was refused with a field message
    assert sorted(o.split(":")[0] for o in outcomes) == ["ok", "refused"]
    assert LinkedWallet.objects.filter(address=account.address, unlinked_at__isnull=True).count() == 1


def test_a_hash_the_chain_never_knew_fails_after_an_hour(chain, lender):
    # given a linked wallet and a hash posted that no node knows (dropped before it was mined)
    account = outsider(chain)
    link(lender, account)
    op = wallet_operation_submit(user=lender, kind="deposit", tx_hash="0x" + "ab" * 32, amount=Decimal("5"))

    # when the watcher runs now, and again once an hour has passed
    assert watch.chain_watch().failed == 0
    WalletOperation.objects.filter(pk=op.pk).update(created_at=op.created_at - timedelta(hours=1, seconds=1))
    report = watch.chain_watch()

    # then it waited, then failed with the reason; nothing was booked
    op.refresh_from_db()
    assert report.failed == 1 and op.status == "failed" and "does not know this transaction" in op.failure_message
    assert not ChainEvent.objects.exists()


def test_a_custodial_request_behind_a_linked_wallets_request_is_second_in_the_queue(chain, lender):
    # given a linked wallet that queued 10 shares on chain, and then a custodial lender who queues 12
    account = outsider(chain, "50", via=lender)
    link(lender, account)
    for tx in wallet_calls(user=lender, kind="deposit", amount=Decimal("20")):
        send(chain, account, tx)
    watch.chain_watch()
    (tx,) = wallet_calls(user=lender, kind="redeem", shares_amount=Decimal("10"))
    send(chain, account, tx)
    watch.chain_watch()
    other = make_lender()
    usdai_buy(user=other, amount=Decimal("30"))
    vault_deposit(user=other, amount=Decimal("30"))
    drain()
    redemption = redemption_request(user=other, shares_amount=Decimal("12"))
    drain()
    redemption.refresh_from_db()
    assert redemption.status == Redemption.Status.QUEUED

    # then its estimate counts the linked request ahead of it, and the queue holds both
    estimate = redemption_estimate(redemption=redemption)
    assert estimate.position == 2
    assert queued_redemptions() == Decimal("22")
