"""Owner onboarding (issue 15): what a cluster needs, and the manifest to give us access.

``/owner/clusters/onboarding/`` explains what a cluster needs (the GPU
Operator's resources and labels) and shows the least-privilege manifest;
``/owner/clusters/onboarding.yaml`` downloads it for ``kubectl apply -f``.
Both are rendered from ``scheduler.onboarding`` (the one table of
permissions). Routes in ``scheduler.urls_scale``.
"""

from django.http import HttpResponse
from django.shortcuts import render

from accounts.models import Role
from accounts.permissions import role_required
from scheduler import onboarding


@role_required(Role.OWNER)
def owner_onboarding(request):
    context = {
        "manifest": onboarding.onboarding_manifest(),
        "permissions": [
            (onboarding.permission_label(group, resource), verbs) for group, resource, verbs in onboarding.PERMISSIONS
        ],
        "prerequisites": onboarding.PREREQUISITES,
        "commands": onboarding.KUBECONFIG_COMMANDS,
        "system_namespace": onboarding.SYSTEM_NAMESPACE,
        "service_account": onboarding.SERVICE_ACCOUNT,
    }
    return render(request, "scheduler/onboarding.html", context)


@role_required(Role.OWNER)
def owner_onboarding_manifest(request):
    response = HttpResponse(onboarding.onboarding_manifest(), content_type="application/yaml; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="infrafi-onboarding.yaml"'
    return response
