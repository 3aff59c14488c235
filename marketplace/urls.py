from django.urls import path

from marketplace import views

app_name = "marketplace"

urlpatterns = [
    path("renter/", views.renter_dashboard, name="renter_dashboard"),
    path("owner/", views.owner_dashboard, name="owner_dashboard"),
    path("owner/servers/", views.server_list, name="server_list"),
    path("owner/servers/new/", views.server_create, name="server_create"),
    path("owner/servers/import/", views.server_import, name="server_import"),
    path("owner/servers/<int:pk>/", views.server_detail, name="server_detail"),
    path("owner/servers/<int:pk>/edit/", views.server_edit, name="server_edit"),
    path("owner/servers/<int:pk>/delete/", views.server_delete, name="server_delete"),
    path("owner/servers/<int:pk>/gpus/", views.gpu_add, name="gpu_add"),
    path("owner/servers/<int:pk>/gpus/<int:gpu_pk>/status/", views.gpu_status, name="gpu_status"),
    path("owner/servers/<int:pk>/gpus/<int:gpu_pk>/remove/", views.gpu_remove, name="gpu_remove"),
]
