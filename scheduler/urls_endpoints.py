"""Routes of the inference endpoints' pages (the views are in ``scheduler.views_endpoints``)."""

from django.urls import path

from scheduler.views_endpoints import endpoint_detail, endpoint_image, endpoint_list, endpoint_new, endpoint_stop

app_name = "scheduler_endpoints"

urlpatterns: list = [
    path("bookings/<uuid:public_id>/endpoints/new/", endpoint_new, name="endpoint_new"),
    path("inference/", endpoint_list, name="endpoint_list"),
    path("inference/<uuid:public_id>/", endpoint_detail, name="endpoint_detail"),
    path("inference/<uuid:public_id>/image/", endpoint_image, name="endpoint_image"),
    path("inference/<uuid:public_id>/stop/", endpoint_stop, name="endpoint_stop"),
]
