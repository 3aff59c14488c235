"""Pages of issue 14's payouts work (included from financing/urls.py, namespace "financing")."""

from django.urls import path

from financing.views import payouts

urlpatterns: list = [
    path("owner/payouts/", payouts.owner_payouts, name="owner_payouts"),
    path("owner/payouts/<int:run_id>/statement.csv", payouts.owner_statement_csv, name="owner_statement_csv"),
    path("operator/payouts/", payouts.operator_payouts, name="operator_payouts"),
    path("operator/payouts/run/", payouts.operator_payout_run, name="operator_payout_run"),
    path("operator/payouts/sepa/<int:pk>.xml", payouts.operator_sepa_download, name="operator_sepa_download"),
    path("operator/payouts/sepa/<int:pk>/sent/", payouts.operator_sepa_mark_sent, name="operator_sepa_mark_sent"),
]
