"""API endpoints of issue 14's payouts work (included under /api/v1/, namespace "api")."""

from django.urls import path

from financing import api_payouts

urlpatterns: list = [
    path("owner/payouts/", api_payouts.OwnerPayoutsApi.as_view(), name="owner-payouts"),
    path("owner/payouts/<int:pk>/", api_payouts.OwnerPayoutApi.as_view(), name="owner-payout"),
    path(
        "owner/payouts/runs/<int:run_id>/statement/",
        api_payouts.OwnerStatementApi.as_view(),
        name="owner-payout-statement",
    ),
]
