"""Forms for sign-up roles and profiles. They validate; services write."""

from django import forms
from django.core.exceptions import ValidationError

from accounts.models import LenderProfile, OwnerCompany, Role
from accounts.services import user_roles_grant
from accounts.validators import validate_eip55_address

SIGNUP_ROLE_CHOICES = [
    (Role.RENTER.value, "Rent GPUs"),
    (Role.OWNER.value, "List my GPU servers and borrow against them"),
    (Role.LENDER.value, "Lend: hold sUSDai backed by GPU revenue"),
]


class SignupRolesForm(forms.Form):
    """Extra sign-up fields (allauth's ``ACCOUNT_SIGNUP_FORM_CLASS``)."""

    roles = forms.MultipleChoiceField(
        choices=SIGNUP_ROLE_CHOICES,
        widget=forms.CheckboxSelectMultiple,
        initial=[Role.RENTER.value],
        help_text="You can add roles later.",
    )
    company_name = forms.CharField(
        max_length=200, required=False, help_text="Owners: the company that owns the servers."
    )
    wallet_address = forms.CharField(
        max_length=42, required=False, help_text="Lenders: an EIP-55 checksummed address (optional now)."
    )

    def clean(self):
        data = super().clean()
        roles = data.get("roles") or []
        name = (data.get("company_name") or "").strip()
        if Role.OWNER in roles:
            if not name:
                self.add_error("company_name", "Owners must name their company.")
            elif OwnerCompany.objects.filter(name__iexact=name).exists():
                self.add_error("company_name", "A company with this name already exists.")
        wallet = (data.get("wallet_address") or "").strip()
        if wallet and Role.LENDER in roles:
            try:
                validate_eip55_address(wallet)
            except ValidationError as exc:
                self.add_error("wallet_address", exc)
            else:
                if LenderProfile.objects.filter(wallet_address=wallet).exists():
                    self.add_error("wallet_address", "This wallet is already registered to another lender.")
        return data

    def signup(self, request, user) -> None:
        user_roles_grant(
            user=user,
            roles=self.cleaned_data["roles"],
            company_name=self.cleaned_data.get("company_name", ""),
            wallet_address=self.cleaned_data.get("wallet_address", ""),
        )


class RenterBillingForm(forms.Form):
    billing_name = forms.CharField(max_length=200, label="Name on invoices")
    billing_address = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), label="Billing address")
    billing_country = forms.CharField(
        min_length=2, max_length=2, label="Country", help_text="Two-letter code, e.g. US, DE, SG."
    )
    vat_id = forms.CharField(max_length=32, required=False, label="VAT / tax id")


class CompanyCreateForm(forms.Form):
    company_name = forms.CharField(max_length=200, label="Company name")


class OwnerCompanyForm(forms.Form):
    name = forms.CharField(max_length=200)
    payout_account_holder = forms.CharField(max_length=200, required=False)
    payout_iban = forms.CharField(max_length=42, required=False, label="Payout IBAN or account number")
    payout_bic = forms.CharField(max_length=11, required=False, label="Payout BIC/SWIFT")
    payout_wallet_address = forms.CharField(
        max_length=42, required=False, label="Payout wallet (EIP-55)", validators=[validate_eip55_address]
    )


class MemberInviteForm(forms.Form):
    email = forms.EmailField(label="E-mail of the person to invite")


class LenderWalletForm(forms.Form):
    wallet_address = forms.CharField(max_length=42, label="Wallet address", validators=[validate_eip55_address])
