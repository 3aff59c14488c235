"""Pages of issue 14's wallets work (included from financing/urls.py, namespace "financing")."""

from django.urls import path

from financing.views import wallet_links

urlpatterns: list = [
    path("wallet/link/nonce/", wallet_links.wallet_link_nonce, name="wallet_link_nonce"),
    path("wallet/link/", wallet_links.wallet_link_confirm, name="wallet_link"),
    path("wallet/unlink/", wallet_links.wallet_unlink, name="wallet_unlink"),
    path("lender/vault/wallet/calls/", wallet_links.wallet_vault_calls, name="wallet_vault_calls"),
    path("lender/vault/wallet/operations/", wallet_links.wallet_vault_submit, name="wallet_vault_submit"),
]
