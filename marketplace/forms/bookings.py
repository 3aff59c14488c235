"""Forms of the booking, checkout and earnings pages."""

from django import forms

from marketplace.forms.fields import UTCDateTimeField


class BookingForm(forms.Form):
    gpu_count = forms.IntegerField(min_value=1, max_value=16, initial=1, label="GPUs")
    start = UTCDateTimeField(label="Start (UTC)")
    end = UTCDateTimeField(label="End (UTC)")
    quoted_price = forms.DecimalField(widget=forms.HiddenInput, decimal_places=2)


class PayForm(forms.Form):
    payment_method = forms.CharField(
        max_length=100,
        required=False,
        help_text="A Stripe payment method id (test mode: pm_card_visa).",
    )


class CardRemoveForm(forms.Form):
    card = forms.CharField(max_length=100, widget=forms.HiddenInput)


class EarningsPeriodForm(forms.Form):
    days = forms.IntegerField(min_value=1, max_value=366, initial=30, required=False)
