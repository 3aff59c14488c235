"""API endpoints of issue 14's wallets work (included under /api/v1/, namespace "api")."""

from django.urls import path

from financing import api_wallets

urlpatterns: list = [
    path("wallet/own/", api_wallets.OwnWalletApi.as_view(), name="own-wallet"),
    path("wallet/own/nonce/", api_wallets.OwnWalletNonceApi.as_view(), name="own-wallet-nonce"),
    path("wallet/own/unlink/", api_wallets.OwnWalletUnlinkApi.as_view(), name="own-wallet-unlink"),
    path("vault/own/calls/", api_wallets.OwnWalletCallsApi.as_view(), name="own-wallet-calls"),
    path("vault/own/operations/", api_wallets.OwnWalletOperationsApi.as_view(), name="own-wallet-operations"),
]
