"""Pages and the page's JSON calls for users' own wallets: link one with Sign-In with Ethereum,
unlink it (password or code again), and the vault calls signed in the browser.

Thin: a form validates the JSON body (or the POST), one service runs, the answer is JSON
(400 with ``{"errors": {field: [messages]}}`` on bad input) or a page. The JavaScript is
``static/js/wallet_link.js``; the wallet itself is the page's EIP-1193 provider.
"""

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Role
from accounts.permissions import role_required
from accounts.reauth import reauth_check, reauth_label
from core.forms import form_submit
from financing.forms import SiweNonceForm, WalletCallsForm, WalletLinkForm, WalletOperationForm, WalletUnlinkForm
from financing.selectors.wallet_links import linked_wallet, wallet_operation
from financing.services import wallet_links


def _json_form(request, form_class):
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {"__invalid__": True}
    form = form_class({k: v for k, v in body.items() if v is not None})
    if "__invalid__" in body:
        form.is_valid()
        form.add_error(None, "Send a JSON object.")
    return form


def _errors(form) -> JsonResponse:
    return JsonResponse({"errors": {k: list(v) for k, v in form.errors.items()}}, status=400)


@login_required
@require_POST
def wallet_link_nonce(request):
    """The EIP-4361 message for the address the page's wallet reported."""
    form = _json_form(request, SiweNonceForm)
    done = form_submit(
        form,
        lambda d: wallet_links.siwe_nonce_issue(
            user=request.user, address=d["address"], domain=request.get_host(), uri=request.build_absolute_uri("/")
        ),
    )
    if not done:
        return _errors(form)
    return JsonResponse({"message": done.result.message, "address": done.result.address})


@login_required
@require_POST
def wallet_link_confirm(request):
    """The signed message: link the address (400 with the reason otherwise)."""
    form = _json_form(request, WalletLinkForm)
    done = form_submit(form, lambda d: wallet_links.wallet_link(user=request.user, domain=request.get_host(), **d))
    if not done:
        return _errors(form)
    messages.success(request, f"Linked your wallet {done.result.address}.")
    return JsonResponse({"address": done.result.address})


@login_required
@require_http_methods(["GET", "POST"])
def wallet_unlink(request):
    """Unlink the user's own wallet, after the password (or a TOTP code) again."""
    user = request.user
    form = WalletUnlinkForm(request.POST or None, reauth_label=reauth_label(user=user))

    def unlink(d):
        reauth_check(request=request, user=user, secret=d["reauth"])
        return wallet_links.wallet_unlink(user=user)

    if request.method == "POST" and form_submit(form, unlink):
        messages.success(request, "Your wallet is unlinked. Its USDai and sUSDai stay where they are, in your wallet.")
        return redirect("financing:wallet")
    context = {"form": form, "linked": linked_wallet(user=user)}
    return render(request, "financing/wallet_unlink.html", context, status=400 if form.errors else 200)


@role_required(Role.LENDER)
@require_POST
def wallet_vault_calls(request):
    """The unsigned transactions for a deposit, a redemption request or a cancellation."""
    form = _json_form(request, WalletCallsForm)
    done = form_submit(
        form,
        lambda d: wallet_links.wallet_calls(
            user=request.user,
            kind=d["kind"],
            amount=d["amount"],
            shares_amount=d["shares"],
            request_id=d["request_id"],
        ),
    )
    if not done:
        return _errors(form)
    calls = [{"label": tx.label, "tx": tx.as_request()} for tx in done.result]
    return JsonResponse({"chain_id": hex(done.result[0].chain_id), "transactions": calls})


@role_required(Role.LENDER)
@require_POST
def wallet_vault_submit(request):
    """A transaction the wallet sent: recorded pending until the chain watcher credits it."""
    form = _json_form(request, WalletOperationForm)
    done = form_submit(
        form,
        lambda d: wallet_links.wallet_operation_submit(
            user=request.user,
            kind=d["kind"],
            tx_hash=d["tx_hash"],
            amount=d["amount"],
            shares_amount=d["shares"],
            request_id=d["request_id"],
        ),
    )
    if not done:
        return _errors(form)
    row = wallet_operation(user=request.user, pk=done.result.pk)
    return JsonResponse({"id": row.id, "status": row.status, "tx_hash": row.tx_hash}, status=201)
