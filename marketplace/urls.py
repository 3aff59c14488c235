from django.urls import path

from marketplace.views import bookings, inventory, listings, webhooks

app_name = "marketplace"

urlpatterns = [
    path("renter/", inventory.renter_dashboard, name="renter_dashboard"),
    path("owner/", inventory.owner_dashboard, name="owner_dashboard"),
    path("owner/servers/", inventory.server_list, name="server_list"),
    path("owner/servers/new/", inventory.server_create, name="server_create"),
    path("owner/servers/import/", inventory.server_import, name="server_import"),
    path("owner/servers/<int:pk>/", inventory.server_detail, name="server_detail"),
    path("owner/servers/<int:pk>/edit/", inventory.server_edit, name="server_edit"),
    path("owner/servers/<int:pk>/delete/", inventory.server_delete, name="server_delete"),
    path("owner/servers/<int:pk>/gpus/", inventory.gpu_add, name="gpu_add"),
    path("owner/servers/<int:pk>/gpus/<int:gpu_pk>/status/", inventory.gpu_status, name="gpu_status"),
    path("owner/servers/<int:pk>/gpus/<int:gpu_pk>/remove/", inventory.gpu_remove, name="gpu_remove"),
    path("search/", listings.search, name="search"),
    path("listings/<int:pk>/", listings.listing_detail, name="listing_detail"),
    path("listings/<int:pk>/book/", bookings.booking_create, name="booking_create"),
    path("bookings/", bookings.my_bookings, name="my_bookings"),
    path("bookings/invoices.csv", bookings.invoices_csv, name="invoices_csv"),
    path("bookings/<uuid:public_id>/checkout/", bookings.checkout, name="checkout"),
    path("bookings/<uuid:public_id>/checkout/return/", bookings.checkout_return, name="checkout_return"),
    path("renter/cards/", bookings.card_list, name="cards"),
    path("bookings/<uuid:public_id>/cancel/", bookings.booking_cancel, name="booking_cancel"),
    path("bookings/<uuid:public_id>/invoice/", bookings.invoice, name="invoice"),
    path("owner/listings/", listings.owner_listings, name="owner_listings"),
    path("owner/listings/<int:pk>/", listings.owner_listing_edit, name="owner_listing_edit"),
    path("owner/earnings/", bookings.owner_earnings, name="owner_earnings"),
    path("owner/earnings.csv", bookings.owner_earnings_csv, name="owner_earnings_csv"),
    path("webhooks/stripe/", webhooks.stripe_webhook, name="stripe_webhook"),
]
