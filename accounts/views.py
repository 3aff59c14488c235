"""Account pages: the role chooser, profile pages, company invitations, API tokens."""

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from accounts import services
from accounts.forms import (
    CompanyCreateForm,
    LenderWalletForm,
    MemberInviteForm,
    OwnerCompanyForm,
    RenterBillingForm,
)
from accounts.models import ApiToken, Role
from accounts.permissions import role_required
from accounts.selectors import (
    company_invitations_pending_for_company,
    company_invitations_pending_for_user,
    lender_profile_for_user,
    owner_company_for_user,
    owner_company_is_admin,
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
    invitations = list(company_invitations_pending_for_user(request.user))
    if len(held) == 1 and not invitations:
        (only,) = held
        return redirect(ROLE_DASHBOARDS[only])
    cards = [(role, reverse(ROLE_DASHBOARDS[role])) for role in Role if role.value in held]
    return render(request, "accounts/dashboard.html", {"cards": cards, "invitations": invitations})


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
    member_form = MemberInviteForm(request.POST if action == "member" else None, prefix="member")
    link = request.build_absolute_uri(reverse("accounts:invitations"))
    # The services refuse a plain member (PermissionDenied: 403).
    if action == "member" and form_submit(
        member_form,
        lambda d: services.company_invitation_send(
            company=company, invited_by=request.user, email=d["email"], link=link
        ),
    ):
        # The same answer whether or not the address has an account.
        messages.success(request, f"Invitation sent to {member_form.cleaned_data['email']}.")
        return redirect("accounts:company")
    if action == "company" and form_submit(
        form, lambda d: services.owner_company_update(company=company, by=request.user, **d)
    ):
        messages.success(request, "Company details saved.")
        return redirect("accounts:company")
    is_admin = owner_company_is_admin(company=company, user=request.user)
    context = {
        "company": company,
        "form": form,
        "member_form": member_form,
        "members": owner_company_members(company),
        "invitations": company_invitations_pending_for_company(company) if is_admin else [],
        "is_admin": is_admin,
        "mfa_enabled": user_has_mfa(request.user),
    }
    status = 400 if (form.errors or member_form.errors) else 200
    return render(request, "accounts/company.html", context, status=status)


@login_required
def invitations(request):
    """The company invitations addressed to the signed-in user's e-mail."""
    pending = company_invitations_pending_for_user(request.user)
    return render(request, "accounts/invitations.html", {"invitations": pending})


@login_required
@require_POST
def invitation_respond(request, token: str):
    """Accept or decline one invitation (``action``: ``accept`` or ``decline``)."""
    accept = request.POST.get("action") == "accept"
    try:
        if accept:
            membership = services.company_invitation_accept(token=token, user=request.user)
        else:
            services.company_invitation_decline(token=token, user=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        pending = company_invitations_pending_for_user(request.user)
        return render(request, "accounts/invitations.html", {"invitations": pending}, status=400)
    if accept:
        messages.success(request, f"You are now a member of {membership.company.name}.")
        return redirect("marketplace:owner_dashboard")
    messages.success(request, "Invitation declined.")
    return redirect("accounts:invitations")


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


class ApiTokenCreateForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, help_text="Unique among your tokens; made up when blank.")
    scope = forms.ChoiceField(choices=ApiToken.Scope.choices, initial=ApiToken.Scope.READ)
    expires_in_days = forms.IntegerField(label="Expires in (days)", min_value=1, max_value=settings.API_TOKEN_TTL_DAYS)
    code = forms.CharField(
        label="Authenticator code",
        max_length=16,
        required=False,
        help_text="A current code from your authenticator app.",
    )

    def __init__(self, *args, needs_code: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["expires_in_days"].initial = settings.API_TOKEN_TTL_DAYS
        if needs_code:
            self.fields["code"].required = True
        else:
            del self.fields["code"]


def _api_token_page(request, form, *, issued=None, status=200):
    context = {
        "form": form,
        "tokens": ApiToken.objects.live_for(request.user),
        "issued": issued,
        "ttl_days": settings.API_TOKEN_TTL_DAYS,
    }
    return render(request, "accounts/api_token.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def api_token(request):
    """The user's API tokens; a new one (with a current TOTP code when the account has TOTP),
    whose clear token this response shows once. The page is never cached (no-store)."""
    needs_code = services.api_token_needs_code(user=request.user)
    form = ApiTokenCreateForm(request.POST if request.method == "POST" else None, needs_code=needs_code)
    if request.method == "POST" and (
        done := form_submit(form, lambda d: services.api_token_create(request=request, user=request.user, **d))
    ):
        messages.success(
            request, f"API token \u201c{done.result.token.name}\u201d created. Copy it now: it is shown once."
        )
        fresh = ApiTokenCreateForm(needs_code=needs_code)
        return _api_token_page(request, fresh, issued=done.result)
    return _api_token_page(request, form, status=400 if form.errors else 200)


@login_required
@require_POST
def api_token_revoke(request, pk: int):
    if services.api_token_revoke(user=request.user, token_id=pk):
        messages.success(request, "The API token was revoked; it no longer works.")
    else:
        messages.error(request, "There is no such API token.")
    return redirect("accounts:api_token")
