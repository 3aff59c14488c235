"""Reconciliation: the chain against the ledger (hourly, and on the operator's page).

Checks, each exact to the wei (ledger amounts are micro-dollars; 1 micro-dollar
is 10¹² wei):

- USDai total supply = USDai held for users + the vault's cash on chain +
  first-loss capital held by the protocol;
- the vault's idle USDai = vault cash − inflows not yet reported − the
  sub-micro-dollar remainders of redemptions paid (the chain pays wei, the
  books micro-dollars, rounded down);
- the vault's deployed assets = T-bills + what the loans are worth (principal
  and claim receivables less the allowance for losses) + principal repaid but
  not yet reported;
- the first-loss capital the protocol holds = the operator's USDai;
- each wallet's USDai = its ledger balance (+ its redemption remainders);
- each title: owner (the owner's wallet, or the protocol after
  foreclosure) and lien (set while pledged).

Rows still in the outbox make differences that are not errors: the report
counts them, and mismatches are alerted only when nothing is in flight. A
reset chain (not the recorded deployment: another block 0, no code at the
recorded addresses) is one failing check, "Chain is the recorded deployment",
alerted even with rows in flight (they cannot land).
"""

from decimal import Decimal

from django.db.models import Q

from core import money
from financing.chain.client import ChainError, address_for, usd_to_wei
from financing.chain.node import chain_reset_reason, get_chain
from financing.models import ChainAlert, ChainOp, Collateral, LedgerAccount, Posting, Reconciliation, Wallet
from financing.selectors.vault import loans_value, unreported_inflows


def _balance(code_filter: dict) -> Decimal:
    return money.usd(money.sum_of(Posting.objects.filter(**code_filter), "amount"))


def _redemption_dust() -> dict[str, int]:
    """Per receiving wallet owner's user id: wei paid beyond the micro-dollars booked."""
    dust: dict[str, int] = {}
    for op in ChainOp.objects.filter(contract="SUSDai", function="service", status=ChainOp.Status.CONFIRMED):
        for event in op.result.get("events", []):
            if event["event"] == "RedeemServiced":
                wei = int(event["args"]["assets"])
                owner = event["args"]["owner"]
                dust[owner] = dust.get(owner, 0) + wei % 10**12
    return dust


class _Reset(Exception):
    """The chain is not the recorded deployment: the other checks would compare nothing."""


def chain_reconcile() -> Reconciliation:
    # Mined is not confirmed (a reorganisation can still undo it); a row being replayed onto a
    # recovered chain is not there yet.
    in_flight = ChainOp.objects.filter(
        Q(status__in=ChainOp.IN_FLIGHT) | Q(replay__in=[ChainOp.Replay.DUE, ChainOp.Replay.SENT])
    ).count()
    checks: list[dict] = []

    def check(name: str, chain_value, ledger_value) -> None:
        checks.append(
            {"name": name, "chain": str(chain_value), "ledger": str(ledger_value), "ok": chain_value == ledger_value}
        )

    reset = ""
    try:
        chain = get_chain()
        reset = chain_reset_reason(chain)
        check("Chain is the recorded deployment", reset or "yes", "yes")
        if reset:
            raise _Reset
        dust = _redemption_dust()
        pending = unreported_inflows()
        users_usdai = -_balance({"account__code__startswith": "usdai:"}) - _balance({"account__code": "usdai_external"})
        vault_cash = _balance({"account__code": "vault_cash"})
        on_chain_cash = vault_cash - pending.total
        escrow = -_balance({"account__code__startswith": "first_loss:"})
        check(
            "USDai total supply (wei)",
            chain.call("USDai", "totalSupply"),
            usd_to_wei(users_usdai + on_chain_cash + escrow),
        )
        check(
            "First-loss capital held by the protocol (wei)",
            chain.call("USDai", "balanceOf", address_for(0)),
            usd_to_wei(escrow),
        )
        check(
            "Vault idle USDai (wei)",
            chain.call("SUSDai", "idle"),
            usd_to_wei(on_chain_cash) - sum(dust.values()),
        )
        deployed = _balance({"account__code": "tbill_holdings"}) + loans_value() + pending.principal
        check("Vault deployed: loans + T-bills (wei)", chain.call("SUSDai", "deployed"), usd_to_wei(deployed))
        for wallet in Wallet.objects.filter(user__isnull=False).select_related("user"):
            account = LedgerAccount.objects.filter(code=f"usdai:{wallet.user_id}").first()
            booked = -_balance({"account": account}) if account else Decimal(0)
            check(
                f"USDai of {wallet.user} {wallet.address} (wei)",
                chain.call("USDai", "balanceOf", wallet.address),
                usd_to_wei(booked) + dust.get(wallet.address, 0),
            )
        minted = {
            int(op.args[1])
            for op in ChainOp.objects.filter(contract="CaliberNFT", function="mint", status=ChainOp.Status.CONFIRMED)
        }
        protocol = address_for(0)
        for collateral in Collateral.objects.filter(pk__in=minted).select_related("server__owner__wallet"):
            if collateral.lien == Collateral.Lien.FORECLOSED:
                expected_owner = protocol
            else:
                wallet = getattr(collateral.server.owner, "wallet", None)
                expected_owner = wallet.address if wallet else ""
            check(f"Title {collateral.pk} owner", chain.call("CaliberNFT", "ownerOf", collateral.pk), expected_owner)
            check(
                f"Title {collateral.pk} lien",
                chain.call("CaliberNFT", "lien", collateral.pk),
                collateral.lien == Collateral.Lien.PLEDGED,
            )
    except _Reset:
        pass
    except ChainError as exc:
        checks.append({"name": "Chain reachable", "chain": str(exc), "ledger": "", "ok": False})
    mismatches = sum(1 for c in checks if not c["ok"])
    report = Reconciliation.objects.create(in_flight=in_flight, checks=checks, mismatches=mismatches)
    if mismatches and (not in_flight or reset):
        names = ", ".join(c["name"] for c in checks if not c["ok"])[:400]
        ChainAlert.objects.create(kind="reconcile", message=f"{mismatches} reconciliation mismatches: {names}")
    return report
