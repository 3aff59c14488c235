from django.urls import path

from financing import views

app_name = "financing"

urlpatterns = [
    path("lender/", views.lender_dashboard, name="lender_dashboard"),
]
