"""Financing forms: they validate input; services write."""

from django import forms

from core.api import BIGINT_MAX
from financing.models import Collateral, Loan


class CollateralForm(forms.Form):
    server = forms.ModelChoiceField(queryset=None)
    purchase_price = forms.DecimalField(min_value=0, decimal_places=2, label="Purchase price (USD)")
    purchase_date = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    custodian = forms.CharField(max_length=200, help_text="Who holds the hardware (the data centre or bailee).")
    custody_receipt = forms.CharField(max_length=120, label="Custody receipt reference")
    insurer = forms.CharField(max_length=200)
    policy_number = forms.CharField(max_length=80)
    coverage = forms.DecimalField(min_value=0, decimal_places=2, label="Coverage (USD)")
    insurance_expires = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, servers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["server"].queryset = servers


class LoanApplicationForm(forms.Form):
    collateral = forms.ModelChoiceField(queryset=None)
    amount = forms.DecimalField(min_value=0, decimal_places=2, label="Amount (USD)")
    tenor_months = forms.IntegerField(min_value=12, max_value=36, initial=36, label="Tenor (months)")
    kind = forms.ChoiceField(choices=Loan.Kind.choices, label="Schedule")

    def __init__(self, *args, collateral=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["collateral"].queryset = collateral if collateral is not None else Collateral.objects.none()


# --- USDai and the vault ---------------------------------------------------------------


class UsdaiBuyForm(forms.Form):
    amount = forms.DecimalField(max_digits=14, decimal_places=2, label="Amount (USD)")
    payment_method = forms.CharField(
        max_length=100, required=False, help_text="A Stripe payment method id (test mode: pm_card_visa)."
    )

    def __init__(self, *args, test_gateway: bool = False, browser_cards: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if test_gateway or browser_cards:  # the offline gateway takes no card; Stripe.js takes it next
            self.fields["payment_method"].widget = forms.HiddenInput()
        if browser_cards:
            self.fields["amount"].help_text = "Then enter your card: it may ask you to confirm with your bank."


def _reauth_field(help_text: str) -> forms.CharField:
    return forms.CharField(
        max_length=128,
        required=False,
        strip=False,
        label="Your password",
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        help_text=help_text,
    )


class ReauthForm(forms.Form):
    """A form whose last field asks for the password again (or, with ``reauth_label``, a TOTP
    code: ``accounts.reauth``)."""

    reauth_help = "Asked again before this goes ahead."

    def __init__(self, *args, reauth_label: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["reauth"] = _reauth_field(self.reauth_help)
        if reauth_label:
            self.fields["reauth"].label = reauth_label


class UsdaiSendForm(ReauthForm):
    address = forms.CharField(
        max_length=100, label="To address", help_text="An outside Ethereum address, EIP-55 checksummed."
    )
    amount = forms.DecimalField(max_digits=20, decimal_places=6, label="Amount (USDai)")
    reauth_help = "Asked again before USDai leaves InfraFi."


class VaultDepositForm(forms.Form):
    amount = forms.DecimalField(
        max_digits=20, decimal_places=6, label="Amount (USDai)", help_text="At most your USDai balance."
    )


class RedemptionForm(forms.Form):
    shares = forms.DecimalField(max_digits=40, decimal_places=18, label="Shares (sUSDai)")

    def __init__(self, *args, minimum=None, **kwargs):
        super().__init__(*args, **kwargs)
        if minimum is not None:
            self.fields["shares"].help_text = f"At least {minimum} sUSDai; queued first in, first out."
            self.fields["shares"].widget.attrs["min"] = str(minimum)


class RedemptionCancelForm(forms.Form):
    redemption = forms.IntegerField(min_value=1, max_value=BIGINT_MAX, widget=forms.HiddenInput)


# --- Own wallets (SIWE link, browser-signed vault calls) ---------------------------------


class SiweNonceForm(forms.Form):
    address = forms.CharField(max_length=42)


class WalletLinkForm(forms.Form):
    message = forms.CharField(max_length=2000, strip=False)
    signature = forms.CharField(max_length=200)


class WalletUnlinkForm(ReauthForm):
    reauth_help = "Asked again before the link ends."


WALLET_KINDS = [("deposit", "Deposit"), ("redeem", "Redeem"), ("cancel", "Cancel a redemption")]


class WalletCallsForm(forms.Form):
    kind = forms.ChoiceField(choices=WALLET_KINDS)
    amount = forms.DecimalField(max_digits=20, decimal_places=6, required=False, label="Amount (USDai)")
    shares = forms.DecimalField(max_digits=40, decimal_places=18, required=False, label="Shares (sUSDai)")
    request_id = forms.IntegerField(min_value=0, max_value=BIGINT_MAX, required=False)


class WalletOperationForm(WalletCallsForm):
    tx_hash = forms.CharField(max_length=66)


# --- Credit losses and first-loss capital ------------------------------------------------


class FirstLossForm(forms.Form):
    amount = forms.DecimalField(
        max_digits=14,
        decimal_places=2,
        label="Amount (USDai)",
        help_text="From your USDai balance; it absorbs this loan's loss before sUSDai holders do.",
    )


class WriteOffForm(forms.Form):
    sale_proceeds = forms.DecimalField(
        max_digits=14, decimal_places=2, initial=0, label="Sale proceeds (USD)", help_text="What the hardware sold for."
    )


class ClaimSettleForm(forms.Form):
    claim = forms.IntegerField(min_value=1, max_value=BIGINT_MAX, widget=forms.HiddenInput)
    amount_paid = forms.DecimalField(
        max_digits=14, decimal_places=2, label="Amount paid (USD)", help_text="Zero if the insurer denied the claim."
    )


class ProofLookupForm(forms.Form):
    settlement = forms.IntegerField(min_value=1, max_value=BIGINT_MAX, label="Settlement id")
