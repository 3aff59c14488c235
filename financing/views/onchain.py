"""Pages for the on-chain side: the USDai wallet, the sUSDai vault, paying a
booking with USDai, the public proof of revenue and title metadata, and the
operators' chain page. Thin: a form, one service, a template."""

import inspect

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Role
from accounts.permissions import role_required
from accounts.reauth import reauth_check, reauth_label
from core.api import digits
from core.downloads import csv_download
from core.forms import form_submit
from financing import merkle, svg_charts
from financing.forms import (
    ProofLookupForm,
    RedemptionCancelForm,
    RedemptionForm,
    UsdaiBuyForm,
    UsdaiSendForm,
    VaultDepositForm,
)
from financing.models import ChainAlert, ChainOp, Collateral, Redemption
from financing.selectors import vault as vault_selectors
from financing.selectors.chain import chain_operations
from financing.selectors.ledger import usdai_balance
from financing.selectors.proofs import revenue_epochs, settlement_proof_check
from financing.selectors.vault import user_redemptions, wallet_address
from financing.selectors.wallet_history import wallet_history
from financing.selectors.wallet_links import linked_wallet, own_wallet_position, wallet_operations
from financing.services import vault, wallets
from financing.services.outbox import chainalert_resolve, chainop_retry
from financing.services.reconcile import chain_reconcile
from financing.services.titles import collateral_record, record_hash
from marketplace.models import Settlement
from marketplace.payments import get_gateway
from marketplace.payments.stripe_js import allow_stripe_js, stripe_js
from marketplace.selectors.bookings import booking_get_for_renter

# --- Wallet ------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def wallet(request):
    """USDai: the balance and custodial address; buy with the payment gateway, send to an outside address."""
    user = request.user
    gateway = get_gateway()
    action = request.POST.get("action") if request.method == "POST" else None
    buy_form = UsdaiBuyForm(
        request.POST if action == "buy" else None,
        test_gateway=gateway.is_test,
        browser_cards=gateway.browser_cards,
        prefix="buy",
    )
    send_form = UsdaiSendForm(
        request.POST if action == "send" else None, prefix="send", reauth_label=reauth_label(user=user)
    )
    if action == "buy" and gateway.browser_cards:
        # The card is entered next, in the browser (Stripe.js): the purchase waits for it.
        if done := form_submit(buy_form, lambda d: wallets.usdai_buy_start(user=user, amount=d["amount"])):
            return redirect(f"{reverse('financing:wallet')}?purchase={done.result.pk}#buy-card")
    elif action == "buy" and form_submit(buy_form, lambda d: wallets.usdai_buy(user=user, **d)):
        messages.success(request, f"Bought {buy_form.cleaned_data['amount']:,.2f} USDai.")
        return redirect("financing:wallet")
    stripe, card_purchase = stripe_js(gateway), None
    purchase_id = digits(request.GET.get("purchase"))
    if request.method == "GET" and stripe is not None and purchase_id is not None:
        if request.GET.get("payment_intent"):
            return _usdai_buy_return(request, purchase_id)
        try:
            card_purchase = wallets.usdai_purchase_card(user=user, purchase_id=purchase_id)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
    if action == "send" and form_submit(send_form, lambda d: _usdai_send(request, d)):
        d = send_form.cleaned_data
        messages.success(request, f"Sending {d['amount']:,.2f} USDai to {d['address']}.")
        return redirect("financing:wallet")
    context = {
        "balance": usdai_balance(user=user),
        "address": wallet_address(user=user),
        "history": Paginator(wallet_history(user=user), 25).get_page(request.GET.get("page")),
        "gateway": gateway,
        "buy_form": buy_form,
        "send_form": send_form,
        "linked": linked_wallet(user=user),
        "wallet_ops": wallet_operations(user=user),
        "stripe": stripe,
        "card_purchase": card_purchase,
    }
    status = 400 if (buy_form.errors or send_form.errors) else 200
    response = render(request, "financing/wallet.html", context, status=status)
    return allow_stripe_js(response, stripe if card_purchase else None)


def _usdai_buy_return(request, purchase_id: int):
    """Back from Stripe.js's ``confirmCardPayment``: settle the purchase as the webhook would."""
    try:
        purchase = wallets.usdai_purchase_return(user=request.user, purchase_id=purchase_id)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        if purchase.status == purchase.Status.SUCCEEDED:
            messages.success(request, f"Bought {purchase.amount:,.2f} USDai.")
        else:
            messages.info(request, "Payment submitted; the USDai arrive as soon as the card network confirms it.")
    return redirect("financing:wallet")


def _usdai_send(request, d: dict):
    """Sending USDai out asks for the password (or a TOTP code) again."""
    reauth_check(request=request, user=request.user, secret=d["reauth"])
    return wallets.usdai_withdraw(user=request.user, address=d["address"], amount=d["amount"])


@login_required
def wallet_history_csv(request):
    """The whole history of the wallet page (up to 10,000 rows) as CSV."""
    response, writer = csv_download("infrafi-wallet-history.csv")
    writer.writerow(["when_utc", "kind", "description", "amount", "unit", "state", "detail", "reference"])
    for e in wallet_history(user=request.user, limit=10_000, per_kind=10_000):
        writer.writerow(
            [f"{e.at:%Y-%m-%d %H:%M:%S}", e.kind, e.description, e.amount, e.unit, e.state, e.detail, e.reference]
        )
    return response


# --- Vault ------------------------------------------------------------------------------


@role_required(Role.LENDER)
@require_http_methods(["GET", "POST"])
def vault_page(request):
    """sUSDai: the share price and its history, NAV split, realised APR and APY; the lender's
    position and P&L; deposit USDai, queue a redemption, cancel a queued one."""
    user = request.user
    action = request.POST.get("action") if request.method == "POST" else None
    deposit_form = VaultDepositForm(request.POST if action == "deposit" else None, prefix="deposit")
    redeem_form = RedemptionForm(
        request.POST if action == "redeem" else None, minimum=settings.VAULT_MIN_REDEMPTION, prefix="redeem"
    )
    cancel_form = RedemptionCancelForm(request.POST if action == "cancel" else None, prefix="cancel")
    if action == "deposit" and form_submit(deposit_form, lambda d: vault.vault_deposit(user=user, **d)):
        messages.success(
            request,
            f"Deposit of {deposit_form.cleaned_data['amount']:,.2f} USDai submitted: it shows as pending until "
            "the chain confirms it, then your shares appear.",
        )
        return redirect("financing:vault")
    if action == "redeem" and form_submit(
        redeem_form, lambda d: vault.redemption_request(user=user, shares_amount=d["shares"])
    ):
        messages.success(request, "Redemption queued; it is paid first in, first out.")
        return redirect("financing:vault")
    if action == "cancel" and form_submit(
        cancel_form,
        lambda d: vault.redemption_cancel(
            user=user, redemption=get_object_or_404(Redemption, pk=d["redemption"], user=user)
        ),
    ):
        messages.success(request, "Cancelling the redemption: its shares come back to your wallet.")
        return redirect("financing:vault")
    summary = vault_selectors.vault_summary()
    position = vault_selectors.vault_position(user=user)
    history = vault_selectors.vault_history()
    context = {
        "summary": summary,
        "apr_7": _percent(summary.apr_7),
        "apr_30": _percent(summary.apr_30),
        "apy_30": _percent(summary.apy_30),
        "unlock_days": settings.VAULT_UNLOCK_SECONDS / 86400,
        "nav_chart": svg_charts.nav_split({key: getattr(summary, key) for key in ("loans", "tbills", "cash")}),
        "price_chart": svg_charts.line_chart(
            [(f"{d.date:%Y-%m-%d}", d.share_price) for d in history if d.share_price is not None],
            "Share price history",
            places=6,
            prefix="",
            empty="Not enough days recorded for a share-price chart yet.",
        ),
        "position": position,
        "pnl": (pnl := vault_selectors.lender_pnl(user=user, position=position)),
        "own": own_wallet_position(user=user, position=position, pnl=pnl),
        "linked": linked_wallet(user=user),
        "wallet_ops": wallet_operations(user=user),
        "balance": usdai_balance(user=user),
        "redemptions": user_redemptions(user=user),
        "minimum": settings.VAULT_MIN_REDEMPTION,
        "deposit_form": deposit_form,
        "redeem_form": redeem_form,
        "cancel_form": cancel_form,
    }
    status = 400 if (deposit_form.errors or redeem_form.errors or cancel_form.errors) else 200
    return render(request, "financing/vault.html", context, status=status)


def _percent(fraction):
    return None if fraction is None else fraction * 100


# --- Paying a booking with USDai ------------------------------------------------------------


@role_required(Role.RENTER)
@require_POST
def pay_usdai(request, public_id):
    """The checkout page's second payment method (the marketplace does not import financing)."""
    booking = booking_get_for_renter(renter=request.user, public_id=public_id)
    if booking is None:
        raise Http404("No such booking.")
    try:
        wallets.booking_pay_usdai(booking=booking, renter=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("marketplace:checkout", public_id=booking.public_id)
    messages.success(request, f"Paid ${booking.amount:,.2f} with USDai. Your GPUs are reserved.")
    return redirect("marketplace:my_bookings")


# --- Proof of revenue (public) ------------------------------------------------------------


def proof(request):
    """Every revenue epoch and its anchored root; look up a settlement's proof by id."""
    form = ProofLookupForm(request.GET or None)
    if form.is_bound and form.is_valid():
        return redirect("financing:settlement_proof", pk=form.cleaned_data["settlement"])
    context = {"epochs": revenue_epochs(), "form": form}
    return render(request, "financing/proof.html", context, status=400 if form.errors else 200)


def settlement_proof(request, pk: int):
    """One settlement's record, leaf, proof and root, checked against the root on chain."""
    settlement = get_object_or_404(Settlement, pk=pk)
    check = settlement_proof_check(settlement_id=settlement.pk)
    if check is None:
        return render(request, "financing/settlement_proof_pending.html", {"settlement": settlement})
    browser = {"data": check.data, "leaf": check.leaf, "proof": check.proof, "root": check.anchored_root}
    context = {"settlement": settlement, "check": check, "browser": browser}
    return render(request, "financing/settlement_proof.html", context)


def proof_algorithm(request):
    """The Merkle rules, as the reference implementation's docstring states them."""
    return render(request, "financing/proof_algorithm.html", {"rules": inspect.cleandoc(merkle.__doc__)})


# --- CALIBER title metadata (public) --------------------------------------------------------


def caliber_metadata(request, token_id: int):
    """The title's ``tokenURI``: the record it binds and the record's keccak-256 hash."""
    collateral = get_object_or_404(Collateral.objects.select_related("server"), pk=token_id, approved_at__isnull=False)
    record = collateral_record(collateral)
    return JsonResponse(
        {
            "name": f"CALIBER title #{collateral.pk}",
            "description": f"GPU server {collateral.server.hostname}: identity, custody, insurance and appraisal.",
            "record": record,
            "record_hash": record_hash(record),
        }
    )


# --- Operators ------------------------------------------------------------------------


@role_required(Role.OPERATOR)
def operator_chain(request):
    """The chain against the ledger, the outbox, failed rows and open alerts."""
    return render(request, "financing/operator_chain.html", {"ops": chain_operations()})


@role_required(Role.OPERATOR)
@require_POST
def operator_reconcile(request):
    report = chain_reconcile()
    if report.mismatches:
        messages.error(request, f"{report.mismatches} mismatch(es); {report.in_flight} row(s) still in flight.")
    else:
        messages.success(request, f"The chain matches the ledger ({len(report.checks)} checks).")
    return redirect("financing:operator_chain")


@role_required(Role.OPERATOR)
@require_POST
def operator_chainop_retry(request, pk: int):
    op = get_object_or_404(ChainOp, pk=pk, status=ChainOp.Status.FAILED)
    again = chainop_retry(op=op)
    messages.success(request, f"Row #{op.pk} queued again as #{again.pk}.")
    return redirect("financing:operator_chain")


@role_required(Role.OPERATOR)
@require_POST
def operator_alert_resolve(request, pk: int):
    chainalert_resolve(alert=get_object_or_404(ChainAlert, pk=pk))
    messages.success(request, "Alert resolved.")
    return redirect("financing:operator_chain")
