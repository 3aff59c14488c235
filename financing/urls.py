from django.urls import include, path

from financing.views import loans, onchain, operator_money

app_name = "financing"

urlpatterns = [
    path("lender/", loans.lender_dashboard, name="lender_dashboard"),
    path("lender/loans/", loans.loan_book_page, name="loan_book"),
    path("lender/loans/tape.csv", loans.loan_tape_csv, name="loan_tape"),
    path("lender/loans/<uuid:public_id>/", loans.lender_loan, name="lender_loan"),
    path("lender/collateral/<int:pk>/", loans.collateral_page, name="collateral"),
    path("lender/vault/", onchain.vault_page, name="vault"),
    path("owner/financing/", loans.owner_financing, name="owner_financing"),
    path("owner/loans/<uuid:public_id>/", loans.owner_loan, name="owner_loan"),
    path("wallet/", onchain.wallet, name="wallet"),
    path("wallet/history.csv", onchain.wallet_history_csv, name="wallet_history_csv"),
    path("bookings/<uuid:public_id>/pay-usdai/", onchain.pay_usdai, name="pay_usdai"),
    path("proof/", onchain.proof, name="proof"),
    path("proof/algorithm/", onchain.proof_algorithm, name="proof_algorithm"),
    path("proof/settlements/<int:pk>/", onchain.settlement_proof, name="settlement_proof"),
    path("caliber/<int:token_id>", onchain.caliber_metadata, name="caliber"),
    path("caliber/<int:token_id>.json", onchain.caliber_metadata, name="caliber_json"),
    path("operator/chain/", onchain.operator_chain, name="operator_chain"),
    path("operator/chain/reconcile/", onchain.operator_reconcile, name="operator_reconcile"),
    path("operator/chain/ops/<int:pk>/retry/", onchain.operator_chainop_retry, name="operator_chainop_retry"),
    path("operator/chain/alerts/<int:pk>/resolve/", onchain.operator_alert_resolve, name="operator_alert_resolve"),
    path("operator/money/", operator_money.operator_money, name="operator_money"),
    path("operator/money/run/", operator_money.operator_money_run, name="operator_money_run"),
    path(
        "operator/money/alerts/<int:pk>/resolve/",
        operator_money.operator_money_alert_resolve,
        name="operator_money_alert_resolve",
    ),
    path("", include("financing.urls_wallets")),
    path("", include("financing.urls_payouts")),
]
