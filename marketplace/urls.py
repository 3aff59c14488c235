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

from marketplace import market_views  # noqa: E402

urlpatterns += [
    path("search/", market_views.search, name="search"),
    path("listings/<int:pk>/", market_views.listing_detail, name="listing_detail"),
    path("listings/<int:pk>/book/", market_views.booking_create, name="booking_create"),
    path("bookings/", market_views.my_bookings, name="my_bookings"),
    path("bookings/invoices.csv", market_views.invoices_csv, name="invoices_csv"),
    path("bookings/<uuid:public_id>/checkout/", market_views.checkout, name="checkout"),
    path("bookings/<uuid:public_id>/cancel/", market_views.booking_cancel, name="booking_cancel"),
    path("bookings/<uuid:public_id>/invoice/", market_views.invoice, name="invoice"),
    path("owner/listings/", market_views.owner_listings, name="owner_listings"),
    path("owner/listings/<int:pk>/", market_views.owner_listing_edit, name="owner_listing_edit"),
    path("owner/earnings/", market_views.owner_earnings, name="owner_earnings"),
    path("owner/earnings.csv", market_views.owner_earnings_csv, name="owner_earnings_csv"),
]

from marketplace import webhooks  # noqa: E402

urlpatterns += [path("webhooks/stripe/", webhooks.stripe_webhook, name="stripe_webhook")]
