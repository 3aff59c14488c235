"""API of the scheduler's storage (issue 15), under /api/v1/: the renter's registry credentials
and volumes."""

from django.urls import path

from scheduler import api

urlpatterns = [
    path("registries/", api.RegistryCredentialListApi.as_view(), name="registries"),
    path("registries/<int:pk>/", api.RegistryCredentialDetailApi.as_view(), name="registry-detail"),
    path("volumes/", api.VolumeListApi.as_view(), name="volumes"),
    path("volumes/<int:pk>/", api.VolumeDetailApi.as_view(), name="volume-detail"),
]
