from django.urls import path

from scheduler import views

app_name = "scheduler"

urlpatterns = [
    path("owner/clusters/", views.owner_clusters, name="owner_clusters"),
    path("owner/clusters/<int:pk>/", views.owner_cluster_detail, name="owner_cluster"),
    path("owner/clusters/<int:pk>/sync/", views.owner_cluster_sync, name="owner_cluster_sync"),
    path("owner/clusters/<int:pk>/nodes/<str:node>/ready/", views.owner_node_ready, name="owner_node_ready"),
    path("jobs/", views.job_list, name="job_list"),
    path("jobs/<uuid:public_id>/", views.job_detail, name="job_detail"),
    path("jobs/<uuid:public_id>/status.json", views.job_status, name="job_status"),
    path("jobs/<uuid:public_id>/cancel/", views.job_cancel, name="job_cancel"),
    path("bookings/<uuid:public_id>/jobs/new/", views.job_new, name="job_new"),
    path("quick-book/", views.quick_book, name="quick_book"),
]
