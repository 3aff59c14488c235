"""Scheduler forms: connect a cluster, submit a job, quick book."""

import shlex

from django import forms
from django.core.exceptions import ValidationError

from marketplace.models import GpuModel, Region
from marketplace.services.inventory import MAX_GPUS_PER_SERVER

MAX_UPLOAD = 64 * 1024


class ClusterConnectForm(forms.Form):
    name = forms.CharField(max_length=63, help_text="Lower-case letters, digits and hyphens, e.g. prod-eu-1.")
    kubeconfig = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false", "autocomplete": "off"}),
        required=False,
        help_text="Paste it, or upload the file below. It is checked against the cluster, stored encrypted and "
        "never shown again. Use a service account allowed to create Jobs and Namespaces and to read Nodes.",
    )
    kubeconfig_file = forms.FileField(required=False, label="…or upload a kubeconfig file")

    def clean(self):
        data = super().clean()
        upload = data.get("kubeconfig_file")
        if upload:
            if upload.size > MAX_UPLOAD:
                raise ValidationError({"kubeconfig_file": "This file is larger than 64 KiB."})
            try:
                data["kubeconfig"] = upload.read().decode()
            except UnicodeDecodeError as exc:
                raise ValidationError({"kubeconfig_file": "This file is not a text kubeconfig."}) from exc
        return data


class SimulatedClusterForm(forms.Form):
    name = forms.CharField(max_length=63, initial="simulated", help_text="One node per server you have registered.")


class JobForm(forms.Form):
    name = forms.CharField(max_length=42, initial="my-job")
    image = forms.CharField(max_length=400, help_text="e.g. nvcr.io/nvidia/pytorch:24.05-py3")
    command = forms.CharField(required=False, help_text="As you would type it, e.g. python train.py --epochs 3")
    env = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "autocomplete": "off"}),
        help_text="One NAME=value per line. Values are stored encrypted and never shown or logged.",
    )
    gpu_count = forms.IntegerField(min_value=1, max_value=MAX_GPUS_PER_SERVER, label="GPUs")

    def clean_command(self):
        try:
            return shlex.split(self.cleaned_data["command"])
        except ValueError as exc:
            raise ValidationError(f"Cannot split this command: {exc}.") from exc

    def clean_env(self):
        env = {}
        for number, line in enumerate(self.cleaned_data["env"].splitlines(), start=1):
            if not line.strip():
                continue
            name, sep, value = line.partition("=")
            if not sep:
                raise ValidationError(f"Line {number}: write NAME=value.")
            env[name.strip()] = value
        return env


class QuickBookForm(forms.Form):
    gpu_model = forms.ModelChoiceField(queryset=GpuModel.objects.order_by("name"), label="GPU model")
    gpu_count = forms.IntegerField(min_value=1, max_value=64, initial=1, label="GPUs")
    hours = forms.IntegerField(min_value=1, max_value=720, initial=2)
    price_cap = forms.DecimalField(
        min_value=0, max_digits=10, decimal_places=2, required=False, label="Max price per GPU-hour (USD)"
    )
    region = forms.ModelChoiceField(
        queryset=Region.objects.order_by("name"), required=False, help_text="Preferred; others if none fits."
    )
