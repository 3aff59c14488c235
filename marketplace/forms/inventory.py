"""Inventory forms: they validate input; services write."""

from django import forms

from core.api import BIGINT_MAX, INTEGER_MAX
from marketplace.models import Gpu, GpuModel, Region
from marketplace.services.inventory import MAX_GPUS_PER_SERVER


class ServerForm(forms.Form):
    hostname = forms.CharField(max_length=253, help_text="As the node is named in your cluster.")
    serial_number = forms.CharField(max_length=64, required=False, label="Server serial number")
    region = forms.ModelChoiceField(queryset=Region.objects.all())
    data_centre = forms.CharField(max_length=120, required=False, label="Data centre")
    cpu_milli = forms.IntegerField(
        min_value=1000, max_value=INTEGER_MAX, label="CPU (millicores)", help_text="64 cores = 64000."
    )
    memory_mib = forms.IntegerField(
        min_value=1024, max_value=BIGINT_MAX, label="RAM (MiB)", help_text="256 GiB = 262144."
    )


class ServerCreateForm(ServerForm):
    gpu_model = forms.ModelChoiceField(queryset=GpuModel.objects.all(), label="GPU model")
    gpu_count = forms.IntegerField(min_value=1, max_value=MAX_GPUS_PER_SERVER, label="Number of GPUs")
    gpu_serials = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="GPU serial numbers",
        help_text="One per GPU, separated by new lines, commas or semicolons. Leave empty to have serials assigned.",
    )

    def clean_gpu_serials(self) -> list[str]:
        raw = self.cleaned_data.get("gpu_serials", "")
        for sep in (",", ";"):
            raw = raw.replace(sep, "\n")
        return [s.strip() for s in raw.splitlines() if s.strip()]


class GpuAddForm(forms.Form):
    serial = forms.CharField(max_length=64, label="Serial number")
    model = forms.ModelChoiceField(
        queryset=GpuModel.objects.all(), required=False, help_text="Defaults to the model of the server's GPUs."
    )


class GpuStatusForm(forms.Form):
    status = forms.ChoiceField(choices=Gpu.Status.choices)


class ServerImportForm(forms.Form):
    file = forms.FileField(
        label="CSV file",
        help_text="Columns: sn, cpu_milli, memory_mib, gpu, model; optional: serials (;-separated), region, "
        "data_centre, server_serial.",
    )
    default_region = forms.ModelChoiceField(
        queryset=Region.objects.all(), required=False, help_text="For rows without a region column."
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if upload.size > 5 * 1024 * 1024:
            raise forms.ValidationError("The file is larger than 5 MB.")
        data = upload.read()
        try:
            data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise forms.ValidationError("The file is not UTF-8 text.") from exc
        return data
