"""Routes of the inference endpoints' API, under /api/v1/ (the views are in ``scheduler.api_endpoints``)."""

from django.urls import path

from scheduler.api_endpoints import BookingEndpointsApi, EndpointApi

urlpatterns: list = [
    path("bookings/<uuid:public_id>/endpoints/", BookingEndpointsApi.as_view(), name="booking-endpoints"),
    path("endpoints/<uuid:public_id>/", EndpointApi.as_view(), name="endpoint-detail"),
]
