"""Account pages: the role chooser, profile pages, the API token."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
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
from core.forms import form_submit

ROLE_DASHBOARDS = {
    Role.RENTER: "marketplace:renter_dashboard",
    Role.OWNER: "marketplace:owner_dashboard",
    Role.LENDER: "financing:lender_dashboard",
    Role.OPERATOR: "admin:index",
}


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
    user = request.user
    action = request.POST.get("action") if request.method == "POST" else None
    company_form = CompanyCreateForm(request.POST if action == "owner" else None, prefix="company")
    if action == "renter":
        services.renter_role_grant(user=user)
        messages.success(request, "You can now rent GPUs.")
        return redirect("marketplace:renter_dashboard")
    if action == "lender":
        services.lender_role_grant(user=user)
        messages.success(request, "You are now a lender. Add your wallet address.")
        return redirect("accounts:wallet")
    if action == "owner" and form_submit(
        company_form, lambda d: services.owner_company_create(user=user, name=d["company_name"])
    ):
        messages.success(request, "Your company is registered. Add your servers.")
        return redirect("marketplace:owner_dashboard")
    context = {"company_form": company_form, "held": user_roles(user)}
    return render(request, "accounts/roles.html", context, status=400 if company_form.errors else 200)


@role_required(Role.RENTER)
@require_http_methods(["GET", "POST"])
def billing(request):
    profile = renter_profile_for_user(request.user)
    initial = {name: getattr(profile, name) for name in RenterBillingForm.base_fields}
    form = RenterBillingForm(request.POST or None, initial=initial)
    if request.method == "POST" and form_submit(form, lambda d: services.renter_billing_update(user=request.user, **d)):
        messages.success(request, "Billing details saved.")
        return redirect("accounts:billing")
    return render(request, "accounts/billing.html", {"form": form}, status=400 if form.errors else 200)


@role_required(Role.OWNER)
@require_http_methods(["GET", "POST"])
def company(request):
    company = owner_company_for_user(request.user)
    action = request.POST.get("action", "company") if request.method == "POST" else None
    initial = {name: getattr(company, name) for name in OwnerCompanyForm.base_fields}
    form = OwnerCompanyForm(request.POST if action == "company" else None, initial=initial)
    member_form = MemberAddForm(request.POST if action == "member" else None, prefix="member")
    if action == "member" and form_submit(
        member_form, lambda d: services.owner_company_member_add(company=company, email=d["email"])
    ):
        messages.success(request, "Member added.")
        return redirect("accounts:company")
    if action == "company" and form_submit(form, lambda d: services.owner_company_update(company=company, **d)):
        messages.success(request, "Company details saved.")
        return redirect("accounts:company")
    context = {
        "company": company,
        "form": form,
        "member_form": member_form,
        "members": owner_company_members(company),
        "mfa_enabled": user_has_mfa(request.user),
    }
    status = 400 if (form.errors or member_form.errors) else 200
    return render(request, "accounts/company.html", context, status=status)


@role_required(Role.LENDER)
@require_http_methods(["GET", "POST"])
def wallet(request):
    profile = lender_profile_for_user(request.user)
    form = LenderWalletForm(request.POST or None, initial={"wallet_address": profile.wallet_address})
    if request.method == "POST" and form_submit(
        form, lambda d: services.lender_wallet_set(user=request.user, wallet_address=d["wallet_address"])
    ):
        messages.success(request, "Wallet address saved.")
        return redirect("accounts:wallet")
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
