"""Forms for sign-up roles and profiles. They validate; services write."""

from django import forms
from django.core.exceptions import ValidationError
from stdnum.eu import vat

from accounts.models import LenderProfile, OwnerCompany, Role
from accounts.services import user_roles_grant
from accounts.validators import (
    bic_iban_mismatch,
    validate_bic,
    validate_eip55_address,
    validate_iban,
    validate_printable,
    validate_vat_id,
)

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
    vat_id = forms.CharField(
        max_length=32,
        required=False,
        label="VAT / tax id",
        help_text="In the EU: your VAT id with its country prefix (e.g. DE136695976) for reverse-charge invoices.",
    )

    def clean(self):
        # In an EU country the id is an EU VAT id of that country (stdnum.eu.vat), stored compact;
        # elsewhere it is a tax id as the renter writes it (shown on invoices, not checked).
        data = super().clean()
        vat_id = (data.get("vat_id") or "").strip()
        country = (data.get("billing_country") or "").strip().upper()
        if vat_id and country.lower() in vat.MEMBER_STATES:
            try:
                validate_vat_id(vat_id)
            except ValidationError as exc:
                self.add_error("vat_id", exc)
                return data
            number = vat.compact(vat_id)
            if {"EL": "GR"}.get(number[:2], number[:2]) != country:
                self.add_error("vat_id", f"This VAT id is not from {country}, your billing country.")
            else:
                data["vat_id"] = number
        return data


class CompanyCreateForm(forms.Form):
    company_name = forms.CharField(max_length=200, label="Company name")


class OwnerCompanyForm(forms.Form):
    """The company's details and where its payouts go. IBAN and BIC are checked with schwifty
    (checksum, the country's format; the BIC's country is the IBAN's), the VAT id with
    python-stdnum; ``owner_company_update`` checks the same again."""

    name = forms.CharField(max_length=200, validators=[validate_printable])
    vat_id = forms.CharField(max_length=20, required=False, label="VAT id", help_text="EU format, e.g. DE136695976.")
    address_line1 = forms.CharField(max_length=70, required=False, label="Address", validators=[validate_printable])
    address_line2 = forms.CharField(
        max_length=70, required=False, label="Postcode and town", validators=[validate_printable]
    )
    country = forms.CharField(max_length=2, required=False, help_text="Two letters (ISO 3166), e.g. DE.")
    payout_account_holder = forms.CharField(max_length=200, required=False, validators=[validate_printable])
    payout_iban = forms.CharField(max_length=42, required=False, label="Payout IBAN", validators=[validate_iban])
    payout_bic = forms.CharField(max_length=11, required=False, label="Payout BIC/SWIFT", validators=[validate_bic])
    payout_wallet_address = forms.CharField(
        max_length=42, required=False, label="Payout wallet (EIP-55)", validators=[validate_eip55_address]
    )
    payout_rail = forms.ChoiceField(
        choices=OwnerCompany._meta.get_field("payout_rail").choices,
        initial="sepa",
        required=False,
        label="Pay out by",
        help_text="When both an IBAN and a payout wallet are given.",
    )

    def clean_payout_rail(self) -> str:
        return self.cleaned_data["payout_rail"] or "sepa"

    def clean_payout_iban(self) -> str:
        return "".join(self.cleaned_data["payout_iban"].split()).upper()

    def clean_payout_bic(self) -> str:
        return self.cleaned_data["payout_bic"].strip().upper()

    def clean_vat_id(self) -> str:
        value = "".join(self.cleaned_data["vat_id"].split()).upper()
        if value:
            validate_vat_id(value)
        return value

    def clean_country(self) -> str:
        value = self.cleaned_data["country"].strip().upper()
        if value and not (len(value) == 2 and value.isalpha()):
            raise ValidationError("Enter the two-letter country code (ISO 3166), e.g. DE.")
        return value

    def clean(self):
        data = super().clean()
        iban, bic = data.get("payout_iban"), data.get("payout_bic")
        if iban and bic and (mismatch := bic_iban_mismatch(bic, iban)):
            self.add_error("payout_bic", mismatch)
        return data


class MemberInviteForm(forms.Form):
    email = forms.EmailField(label="E-mail of the person to invite")


class LenderWalletForm(forms.Form):
    wallet_address = forms.CharField(max_length=42, label="Wallet address", validators=[validate_eip55_address])
