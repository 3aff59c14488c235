"""Pages of inference endpoints (issue 15): create one on a booking, then manage it.

The pages live under ``/inference/<id>/``: the ``/endpoints/`` prefix belongs to the platform's
proxy (the ASGI proxy takes every path starting ``/endpoints/``). Thin views: the form, one
service of ``scheduler.services.endpoints``, a template. Renter-only; another renter's endpoint or
booking is a 404. Routes in ``scheduler.urls_endpoints``; the jobs' pages are in ``scheduler.views``.
"""

from __future__ import annotations

import shlex

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Role
from accounts.permissions import role_required
from core.forms import form_submit
from marketplace.selectors import bookings as booking_selectors
from scheduler import selectors
from scheduler.models import Endpoint, RegistryCredential, Volume
from scheduler.proxy.stats import endpoint_summary
from scheduler.services import endpoints
from scheduler.workload_templates import TEMPLATES, Kind


class EndpointForm(forms.Form):
    name = forms.CharField(max_length=42, initial="llm")
    image = forms.CharField(max_length=400, help_text="e.g. vllm/vllm-openai:v0.6.3")
    command = forms.CharField(required=False, help_text="Leave empty to run the image's entrypoint.")
    args = forms.CharField(required=False, label="Arguments", help_text="As you would type them.")
    env = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false", "autocomplete": "off"}),
        help_text="One NAME=value per line. Values are stored encrypted and never shown or logged.",
    )
    port = forms.IntegerField(
        initial=8000, max_value=65535, help_text="The port the server listens on in the container."
    )
    readiness_path = forms.CharField(
        max_length=200, initial="/health", help_text="A replica takes requests once this path answers 2xx."
    )
    replicas = forms.IntegerField(initial=1, min_value=1, max_value=endpoints.MAX_REPLICAS)
    gpus_per_replica = forms.IntegerField(initial=1, min_value=1, max_value=64, label="GPUs per replica")
    # -- storage (endpoint storage helper): choices set by ``storage_choices`` --
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
        help_text="Your persistent volume on this server (Account → Volumes), shared by the replicas; "
        "it outlives the endpoint.",
    )

    def storage_choices(self, *, renter, booking) -> EndpointForm:
        """The renter's registry credentials and their live volumes on the booked server as the choices."""
        credentials = RegistryCredential.objects.filter(renter=renter)
        volumes = Volume.objects.filter(renter=renter, server_id=booking.server_id).exclude(
            status=Volume.Status.DELETED
        )
        self.fields["registry_credential"].choices = [("", "Automatic")] + [
            (c.pk, f"{c.name} ({c.registry})") for c in credentials
        ]
        self.fields["volume"].choices = [("", "None")] + [(v.pk, f"{v.pvc_name} ({v.size_gib} GiB)") for v in volumes]
        return self

    def _split(self, field: str):
        try:
            return shlex.split(self.cleaned_data[field])
        except ValueError as exc:
            raise ValidationError(f"Cannot split this: {exc}.") from exc

    def clean_command(self):
        return self._split("command")

    def clean_args(self):
        return self._split("args")

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


class ImageForm(forms.Form):
    image = forms.CharField(max_length=400)


def _initial(template_key: str | None, booking) -> dict:
    template = TEMPLATES.get(template_key or "")
    if template is None or template.kind != Kind.INFERENCE:
        return {"gpus_per_replica": 1}
    return {
        "name": template.key,
        "image": template.image,
        "command": shlex.join(template.command),
        "args": shlex.join(template.args),
        "env": "\n".join(f"{k}={v}" for k, v in template.env.items()),
        "port": template.port,
        "readiness_path": template.readiness_path,
        "replicas": 1,
        "gpus_per_replica": booking.gpu_count,
    }


@role_required(Role.RENTER)
@require_http_methods(["GET", "POST"])
def endpoint_new(request, public_id):
    booking = booking_selectors.booking_get_for_renter(renter=request.user, public_id=public_id)
    if booking is None:
        raise Http404("No such booking.")
    form = EndpointForm(request.POST or None, initial=_initial(request.GET.get("template"), booking)).storage_choices(
        renter=request.user, booking=booking
    )
    if request.method == "POST" and (
        done := form_submit(
            form,
            lambda d: endpoints.endpoint_create(
                booking=booking,
                renter=request.user,
                name=d["name"],
                image=d["image"],
                command=d["command"],
                args=d["args"],
                env=d["env"],
                port=d["port"],
                readiness_path=d["readiness_path"],
                replicas=d["replicas"],
                gpus_per_replica=d["gpus_per_replica"],
                registry_credential=d["registry_credential"],
                volume=d["volume"],
            ),
        )
    ):
        messages.success(request, "Endpoint created.")
        return redirect("scheduler_endpoints:endpoint_detail", public_id=done.result.public_id)
    status = 400 if form.errors else 200
    context = {"booking": booking, "form": form, "templates": TEMPLATES.values()}
    return render(request, "scheduler/endpoint_new.html", context, status=status)


def _my_endpoint(request, public_id) -> Endpoint:
    return get_object_or_404(selectors.renter_endpoints(request.user), public_id=public_id)


@role_required(Role.RENTER)
def endpoint_list(request):
    rows = selectors.renter_endpoints(request.user)[:200]
    return render(request, "scheduler/endpoint_list.html", {"endpoints": rows})


@role_required(Role.RENTER)
def endpoint_detail(request, public_id):
    endpoint = _my_endpoint(request, public_id)
    url = request.build_absolute_uri(f"/endpoints/{endpoint.public_id}/")
    context = {
        "endpoint": endpoint,
        "booking": endpoint.booking,
        "url": url,
        "stats": endpoint_summary(endpoint),
        "image_form": ImageForm(initial={"image": endpoint.image}),
        "simulated": bool(endpoint.cluster and endpoint.cluster.simulated),
    }
    return render(request, "scheduler/endpoint_detail.html", context)


@role_required(Role.RENTER)
@require_POST
def endpoint_image(request, public_id):
    endpoint = _my_endpoint(request, public_id)
    form = ImageForm(request.POST)
    if form_submit(
        form, lambda d: endpoints.endpoint_update_image(endpoint=endpoint, renter=request.user, image=d["image"])
    ):
        messages.success(request, "Image changed: the replicas roll one at a time.")
    else:
        messages.error(request, "; ".join(e for errors in form.errors.values() for e in errors))
    return redirect("scheduler_endpoints:endpoint_detail", public_id=public_id)


@role_required(Role.RENTER)
@require_POST
def endpoint_stop(request, public_id):
    endpoint = _my_endpoint(request, public_id)
    try:
        endpoints.endpoint_stop(endpoint=endpoint, renter=request.user)
        messages.success(request, "Endpoint stopped. Its ready time is billed; the rest of the booking stays yours.")
    except ValidationError as exc:  # already stopped
        messages.error(request, "; ".join(exc.messages))
    return redirect("scheduler_endpoints:endpoint_detail", public_id=public_id)
