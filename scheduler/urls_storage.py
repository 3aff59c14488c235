"""Pages of the scheduler's storage (issue 15): the renter's registry credentials and volumes,
the owner's storage class, a job's log followed and downloaded."""

from django.urls import path

from scheduler import views

app_name = "scheduler_storage"

urlpatterns = [
    path("renter/registries/", views.registries, name="registries"),
    path("renter/volumes/", views.volumes, name="volumes"),
    path("owner/clusters/<int:pk>/storage/", views.owner_cluster_storage, name="owner_cluster_storage"),
    path("jobs/<uuid:public_id>/logs/stream", views.job_log_stream, name="job_log_stream"),
    path("jobs/<uuid:public_id>/logs.txt", views.job_log_download, name="job_log_download"),
]
