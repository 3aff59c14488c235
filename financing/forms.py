"""Financing forms: they validate input; services write."""

from django import forms

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
