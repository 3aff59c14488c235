from django.urls import path

from financing.views import loans as views
from financing.views import onchain as onchain_views

app_name = "financing"

urlpatterns = [
    path("lender/", views.lender_dashboard, name="lender_dashboard"),
    path("lender/loans/", views.loan_book_page, name="loan_book"),
    path("lender/loans/tape.csv", views.loan_tape_csv, name="loan_tape"),
    path("lender/loans/<uuid:public_id>/", views.lender_loan, name="lender_loan"),
    path("lender/collateral/<int:pk>/", views.collateral_page, name="collateral"),
    path("lender/vault/", onchain_views.vault_page, name="vault"),
    path("owner/financing/", views.owner_financing, name="owner_financing"),
    path("owner/loans/<uuid:public_id>/", views.owner_loan, name="owner_loan"),
    path("wallet/", onchain_views.wallet, name="wallet"),
    path("bookings/<uuid:public_id>/pay-usdai/", onchain_views.pay_usdai, name="pay_usdai"),
    path("proof/", onchain_views.proof, name="proof"),
    path("proof/algorithm/", onchain_views.proof_algorithm, name="proof_algorithm"),
    path("proof/settlements/<int:pk>/", onchain_views.settlement_proof, name="settlement_proof"),
    path("caliber/<int:token_id>", onchain_views.caliber_metadata, name="caliber"),
    path("caliber/<int:token_id>.json", onchain_views.caliber_metadata, name="caliber_json"),
    path("operator/chain/", onchain_views.operator_chain, name="operator_chain"),
    path("operator/chain/reconcile/", onchain_views.operator_reconcile, name="operator_reconcile"),
    path("operator/chain/ops/<int:pk>/retry/", onchain_views.operator_chainop_retry, name="operator_chainop_retry"),
    path(
        "operator/chain/alerts/<int:pk>/resolve/", onchain_views.operator_alert_resolve, name="operator_alert_resolve"
    ),
]
