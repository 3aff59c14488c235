"""Scheduler forms: connect a cluster, submit a job, quick book."""

import shlex

from django import forms
from django.core.exceptions import ValidationError

from core.api import BIGINT_MAX
from marketplace.models import GpuModel, Region
from marketplace.services.inventory import MAX_GPUS_PER_SERVER
from scheduler import selectors
from scheduler.services.storage import MAX_VOLUME_GIB_LIMIT

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
    # -- sessions (sessions helper) --
    args = forms.CharField(
        required=False,
        label="Arguments",
        help_text="After the command, as you would type them; {base_url} becomes the first port's address.",
    )
    ports = forms.CharField(
        required=False,
        label="HTTP ports",
        widget=forms.Textarea(attrs={"rows": 2, "spellcheck": "false", "autocomplete": "off"}),
        help_text="One per line: the container's port and a label, e.g. 8888 JupyterLab. "
        "Opened through InfraFi, only by you; at most 8.",
    )
    ssh = forms.BooleanField(
        required=False,
        label="SSH with my keys",
        help_text="Your public keys (Account → SSH keys) go into the container; port 22 inside it.",
    )

    # -- storage (storage helper): choices set by ``storage_choices`` --
    registry_credential = forms.TypedChoiceField(
        required=False,
        coerce=int,
        empty_value=None,
        label="Registry credential",
        help_text="For a private image. Automatic: your saved credential for the image's registry, if any.",
    )
    volume = forms.TypedChoiceField(
        required=False,
        coerce=int,
        empty_value=None,
        label="Volume at /workspace",
        help_text="Your persistent volume on this server (Account → Volumes); it outlives the job.",
    )
    allow_other_regions = forms.BooleanField(
        required=False,
        label="Failover may leave the booked region",
        help_text="If the server fails and no equivalent GPU is free in the booked region, move to another region "
        "instead of refunding the remaining time.",
    )

    def storage_choices(self, *, credentials, volumes) -> "JobForm":
        """The renter's registry credentials and this server's volumes as the choices (storage helper)."""
        self.fields["registry_credential"].choices = [("", "Automatic")] + [
            (c.pk, f"{c.name} ({c.registry})") for c in credentials
        ]
        self.fields["volume"].choices = [("", "None")] + [(v.pk, f"{v.pvc_name} ({v.size_gib} GiB)") for v in volumes]
        return self

    def clean_command(self):
        try:
            return shlex.split(self.cleaned_data["command"])
        except ValueError as exc:
            raise ValidationError(f"Cannot split this command: {exc}.") from exc

    def clean_args(self):
        try:
            return shlex.split(self.cleaned_data["args"])
        except ValueError as exc:
            raise ValidationError(f"Cannot split these arguments: {exc}.") from exc

    def clean_ports(self):
        """``[{"port": 8888, "label": "JupyterLab"}]``; the range and duplicates are the service's to check."""
        ports = []
        for number, line in enumerate(self.cleaned_data["ports"].splitlines(), start=1):
            if not line.strip():
                continue
            port, _, label = line.strip().partition(" ")
            if not port.isdigit():
                raise ValidationError(f"Line {number}: write the port number first, e.g. 8888 JupyterLab.")
            ports.append({"port": int(port), "label": label.strip()})
        return ports

    @staticmethod
    def initial_from(fields: dict) -> dict:
        """The form's initial values for a template's fields (``sessions.template_fields``)."""
        return {
            "name": fields["name"],
            "image": fields["image"],
            "command": shlex.join(fields["command"]),
            "args": shlex.join(fields["args"]),
            "env": "\n".join(f"{k}={v}" for k, v in fields["env"].items()),
            "ports": "\n".join(f"{p['port']} {p['label']}".strip() for p in fields["ports"]),
            "ssh": fields["ssh"],
        }

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


class SshKeyForm(forms.Form):
    """A renter's SSH public key (sessions helper)."""

    name = forms.CharField(max_length=60, required=False, help_text="e.g. laptop; the key's comment if left empty.")
    public_key = forms.CharField(
        label="Public key",
        max_length=16 * 1024,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "autocomplete": "off"}),
        help_text="The contents of ~/.ssh/id_ed25519.pub (ed25519, ecdsa, rsa ≥ 2048 bits, or sk-ssh-ed25519).",
    )


class ClusterSshForm(forms.Form):
    """How the owner's cluster exposes renters' SSH sessions (sessions helper)."""

    ssh_service_type = forms.ChoiceField(label="SSH through", choices=())

    def __init__(self, *args, choices=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["ssh_service_type"].choices = choices


# -- storage (storage helper) --


class RegistryCredentialForm(forms.Form):
    name = forms.CharField(max_length=63, help_text="Your label, e.g. ghcr-acme.")
    registry = forms.CharField(max_length=253, help_text="host[:port]: ghcr.io, nvcr.io, registry.example.com:5000")
    username = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    password = forms.CharField(
        max_length=8192,
        label="Password or token",
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted and never shown again.",
    )


class VolumeForm(forms.Form):
    booking = forms.TypedChoiceField(coerce=str, label="On the server of booking")
    size_gib = forms.IntegerField(min_value=1, max_value=MAX_VOLUME_GIB_LIMIT, label="Size (GiB)", initial=50)

    def __init__(self, *args, bookings=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["booking"].choices = [
            (str(b.public_id), f"{b.server.hostname} · {b.start:%d %b %H:%M} → {b.end:%d %b %H:%M}") for b in bookings
        ]


class ClusterStorageForm(forms.Form):
    storage_class = forms.CharField(
        max_length=253,
        required=False,
        label="Storage class for renters' volumes",
        help_text="A StorageClass of your cluster (kubectl get storageclass); blank: no volumes offered.",
    )
    max_volume_gib = forms.IntegerField(min_value=1, max_value=MAX_VOLUME_GIB_LIMIT, label="Largest volume (GiB)")


class _SupplyModelField(forms.ModelChoiceField):
    """A GPU model with its free GPUs in the label (the queryset carries ``free_gpus``)."""

    def label_from_instance(self, obj) -> str:
        free = getattr(obj, "free_gpus", None)
        return obj.name if free is None else f"{obj.name} ({free} GPU{'s' if free != 1 else ''} free now)"


class QuickBookForm(forms.Form):
    """What the renter needs now; after "Find placements", also the option chosen (hidden fields).

    The model choice offers only models with supply (``selectors.models_with_supply``);
    ``any_model`` lifts that for booking a shown option, whose model may have just sold out
    elsewhere without that option being gone."""

    gpu_model = _SupplyModelField(queryset=GpuModel.objects.none(), label="GPU model")
    gpu_count = forms.IntegerField(min_value=1, max_value=64, initial=1, label="GPUs")
    hours = forms.IntegerField(min_value=1, max_value=720, initial=2)
    price_cap = forms.DecimalField(
        min_value=0, max_digits=10, decimal_places=2, required=False, label="Max price per GPU-hour (USD)"
    )
    region = forms.ModelChoiceField(
        queryset=Region.objects.order_by("name"), required=False, help_text="Preferred; others if none fits."
    )
    cpu_cores = forms.IntegerField(
        min_value=0, max_value=1024, required=False, label="CPU cores (minimum)", help_text="Optional; for all GPUs."
    )
    memory_gib = forms.IntegerField(
        min_value=0, max_value=16384, required=False, label="RAM in GiB (minimum)", help_text="Optional."
    )
    # The option booked ("Book this"): as shown on its card.
    listing = forms.IntegerField(min_value=1, max_value=BIGINT_MAX, required=False, widget=forms.HiddenInput)
    start = forms.DateTimeField(required=False, widget=forms.HiddenInput)
    quoted_total = forms.DecimalField(
        min_value=0, max_digits=14, decimal_places=2, required=False, widget=forms.HiddenInput
    )

    def __init__(self, *args, any_model: bool = False, now=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["gpu_model"].queryset = (
            GpuModel.objects.order_by("name") if any_model else selectors.models_with_supply(now=now)
        )

    def clean(self):
        data = super().clean()
        data["cpu_milli"] = (data.get("cpu_cores") or 0) * 1000
        data["memory_mib"] = (data.get("memory_gib") or 0) * 1024
        return data
