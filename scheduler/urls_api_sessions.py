"""API of the scheduler's sessions (issue 15), under /api/v1/: the renter's SSH keys."""

from django.urls import path

from scheduler import api

urlpatterns = [
    path("ssh-keys/", api.SshKeyListApi.as_view(), name="ssh-keys"),
    path("ssh-keys/<int:pk>/", api.SshKeyDetailApi.as_view(), name="ssh-key-detail"),
]
