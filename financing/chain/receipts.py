"""Receipt handlers: what the books record when a chain call is mined.

The outbox (``financing.services.outbox``) names the calls whose receipts
must be recorded (``RECORDED_CALLS``) and runs each one's handler in the
transaction that confirms the row. This module registers them; it is
imported by ``FinancingConfig.ready()`` so every process has them, whatever
else it loads. Every effect is keyed by the row or by ``tx_hash:log_index``,
so a replayed receipt changes nothing.
"""

from django.utils import timezone

from financing import lock_objects
from financing.chain.client import shares, wei_to_usd
from financing.models import ChainOp, Redemption, VaultDeposit
from financing.services.ledger import Line, journal_post, system_account
from financing.services.outbox import handles
from financing.services.wallets import usdai_account


@handles("SUSDai.deposit")
def _deposited(op: ChainOp, events: list[dict]) -> None:
    for event in events:
        if event["event"] == "Deposit":
            VaultDeposit.objects.filter(op=op).update(shares=shares(int(event["args"]["shares"])))


@handles("SUSDai.request_redeem")
def _queued(op: ChainOp, events: list[dict]) -> None:
    for event in events:
        if event["event"] == "RedeemRequested":
            Redemption.objects.filter(op=op).update(
                request_id=int(event["args"]["id"]), status=Redemption.Status.QUEUED
            )


@handles("SUSDai.cancel_redeem")
def _cancelled(op: ChainOp, events: list[dict]) -> None:
    for event in events:
        if event["event"] == "RedeemCancelled":
            lock_objects.redemption_lock(request_id=int(event["args"]["id"])).update(
                status=Redemption.Status.CANCELLED, shares_left=0
            )


@handles("SUSDai.service")
def _serviced(op: ChainOp, events: list[dict]) -> None:
    for event in events:
        if event["event"] != "RedeemServiced":
            continue
        args = event["args"]
        redemption = lock_objects.redemption_lock(request_id=int(args["id"])).first()
        if redemption is None:
            continue
        amount = wei_to_usd(int(args["assets"]))
        redemption.shares_left = shares(int(args["remaining_shares"]))
        redemption.paid += amount
        if redemption.shares_left == 0:
            redemption.status, redemption.paid_at = Redemption.Status.PAID, timezone.now()
        redemption.save(update_fields=["shares_left", "paid", "status", "paid_at"])
        if amount > 0:
            journal_post(
                key=f"redeem:{op.tx_hash}:{event['log_index']}",
                description=f"sUSDai redemption #{redemption.request_id} paid {amount} USDai to {redemption.user}",
                lines=[
                    Line(system_account("susdai_holders"), amount, "redemption"),
                    Line(usdai_account(redemption.user), -amount, "redemption"),
                    Line(system_account("gateway_clearing"), amount, "redemption"),
                    Line(system_account("vault_cash"), -amount, "redemption"),
                ],
            )
