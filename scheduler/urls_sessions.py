"""Pages of the scheduler's sessions (issue 15): the renter's SSH keys, the owner's SSH Service type."""

from django.urls import path

from scheduler import views

app_name = "scheduler_sessions"

urlpatterns = [
    path("renter/ssh-keys/", views.ssh_keys, name="ssh_keys"),
    path("owner/clusters/<int:pk>/ssh/", views.owner_cluster_ssh, name="owner_cluster_ssh"),
]
