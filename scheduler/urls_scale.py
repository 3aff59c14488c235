"""Routes of owner onboarding (the views are in ``scheduler.views_onboarding``)."""

from django.urls import path

from scheduler.views_onboarding import owner_onboarding, owner_onboarding_manifest

app_name = "scheduler_scale"

urlpatterns = [
    path("owner/clusters/onboarding/", owner_onboarding, name="owner_onboarding"),
    path("owner/clusters/onboarding.yaml", owner_onboarding_manifest, name="owner_onboarding_manifest"),
]
