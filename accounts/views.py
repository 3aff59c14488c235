"""Account pages: the role chooser, profile pages, the API token."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from rest_framework.authtoken.models import Token

from accounts import services
from accounts.forms import (
    CompanyCreateForm,
    LenderWalletForm,
    MemberAddForm,
    OwnerCompanyForm,
    RenterBillingForm,
)
from accounts.models import Role
from accounts.permissions import role_required
from accounts.selectors import (
    lender_profile_for_user,
    owner_company_for_user,
    owner_company_members,
    renter_profile_for_user,
    user_has_mfa,
    user_roles,
)

ROLE_DASHBOARDS = {
    Role.RENTER: "marketplace:renter_dashboard",
    Role.OWNER: "marketplace:owner_dashboard",
    Role.LENDER: "financing:lender_dashboard",
    Role.OPERATOR: "admin:index",
}


def form_errors_from(form, exc: ValidationError) -> None:
    """Attach a service's ValidationError to the form that fed it."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.error_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc)


@login_required
def dashboard(request):
    """Landing page after login: one card per role; a single role goes straight there."""
    held = user_roles(request.user)
    if len(held) == 1:
        (only,) = held
        return redirect(ROLE_DASHBOARDS[only])
    cards = [(role, reverse(ROLE_DASHBOARDS[role])) for role in Role if role.value in held]
    return render(request, "accounts/dashboard.html", {"cards": cards})


@login_required
@require_http_methods(["GET", "POST"])
def roles(request):
    """Add roles to one's account: renter, owner (a company), lender."""
    company_form = CompanyCreateForm(prefix="company")
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "renter":
            services.renter_role_grant(user=request.user)
            messages.success(request, "You can now rent GPUs.")
            return redirect("marketplace:renter_dashboard")
        if action == "lender":
            services.lender_role_grant(user=request.user)
            messages.success(request, "You are now a lender. Add your wallet address.")
            return redirect("accounts:wallet")
        if action == "owner":
            company_form = CompanyCreateForm(request.POST, prefix="company")
            if company_form.is_valid():
                try:
                    services.owner_company_create(user=request.user, name=company_form.cleaned_data["company_name"])
                except ValidationError as exc:
                    form_errors_from(company_form, exc)
                else:
                    messages.success(request, "Your company is registered. Add your servers.")
                    return redirect("marketplace:owner_dashboard")
    return render(
        request,
        "accounts/roles.html",
        {"company_form": company_form, "held": user_roles(request.user)},
        status=400 if company_form.errors else 200,
    )


@role_required(Role.RENTER)
@require_http_methods(["GET", "POST"])
def billing(request):
    profile = renter_profile_for_user(request.user)
    if request.method == "POST":
        form = RenterBillingForm(request.POST)
        if form.is_valid():
            try:
                services.renter_billing_update(user=request.user, **form.cleaned_data)
            except ValidationError as exc:
                form_errors_from(form, exc)
            else:
                messages.success(request, "Billing details saved.")
                return redirect("accounts:billing")
    else:
        form = RenterBillingForm(
            initial={
                "billing_name": profile.billing_name,
                "billing_address": profile.billing_address,
                "billing_country": profile.billing_country,
                "vat_id": profile.vat_id,
            }
        )
    return render(request, "accounts/billing.html", {"form": form}, status=400 if form.errors else 200)


@role_required(Role.OWNER)
@require_http_methods(["GET", "POST"])
def company(request):
    company = owner_company_for_user(request.user)
    member_form = MemberAddForm(prefix="member")
    if request.method == "POST" and request.POST.get("action") == "member":
        form = OwnerCompanyForm(initial=_company_initial(company))
        member_form = MemberAddForm(request.POST, prefix="member")
        if member_form.is_valid():
            try:
                services.owner_company_member_add(company=company, email=member_form.cleaned_data["email"])
            except ValidationError as exc:
                form_errors_from(member_form, exc)
            else:
                messages.success(request, "Member added.")
                return redirect("accounts:company")
    elif request.method == "POST":
        form = OwnerCompanyForm(request.POST)
        if form.is_valid():
            try:
                services.owner_company_update(company=company, **form.cleaned_data)
            except ValidationError as exc:
                form_errors_from(form, exc)
            else:
                messages.success(request, "Company details saved.")
                return redirect("accounts:company")
    else:
        form = OwnerCompanyForm(initial=_company_initial(company))
    context = {
        "company": company,
        "form": form,
        "member_form": member_form,
        "members": owner_company_members(company),
        "mfa_enabled": user_has_mfa(request.user),
    }
    status = 400 if (form.errors or member_form.errors) else 200
    return render(request, "accounts/company.html", context, status=status)


def _company_initial(company) -> dict:
    return {
        "name": company.name,
        "payout_account_holder": company.payout_account_holder,
        "payout_iban": company.payout_iban,
        "payout_bic": company.payout_bic,
        "payout_wallet_address": company.payout_wallet_address,
    }


@role_required(Role.LENDER)
@require_http_methods(["GET", "POST"])
def wallet(request):
    profile = lender_profile_for_user(request.user)
    if request.method == "POST":
        form = LenderWalletForm(request.POST)
        if form.is_valid():
            try:
                services.lender_wallet_set(user=request.user, wallet_address=form.cleaned_data["wallet_address"])
            except ValidationError as exc:
                form_errors_from(form, exc)
            else:
                messages.success(request, "Wallet address saved.")
                return redirect("accounts:wallet")
    else:
        form = LenderWalletForm(initial={"wallet_address": profile.wallet_address})
    context = {"form": form, "profile": profile, "mfa_enabled": user_has_mfa(request.user)}
    return render(request, "accounts/wallet.html", context, status=400 if form.errors else 200)


@login_required
def api_token(request):
    token = Token.objects.filter(user=request.user).first()
    return render(request, "accounts/api_token.html", {"token": token})


@login_required
@require_POST
def api_token_rotate(request):
    token = services.api_token_rotate(user=request.user)
    messages.success(request, "A new API token was issued; the old one no longer works.")
    return render(request, "accounts/api_token.html", {"token": token, "fresh": True})
