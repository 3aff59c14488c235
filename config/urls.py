from csp.constants import NONCE, UNSAFE_INLINE
from csp.decorators import csp_update
from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from accounts import views as account_views
from accounts.api import MeApi, TokenApi, TokenDetailApi, TokenListApi
from config import health
from financing import api as financing_api
from marketplace.api import bookings as booking_api
from marketplace.api import inventory as inventory_api
from marketplace.api import listings as listing_api
from marketplace.views import inventory as inventory_views
from scheduler import api as scheduler_api

router = DefaultRouter()
router.register("inventory/gpu-models", inventory_api.GpuModelViewSet, basename="gpu-model")
router.register("inventory/regions", inventory_api.RegionViewSet, basename="region")
router.register("inventory/servers", inventory_api.ServerViewSet, basename="server")
router.register("inventory/gpus", inventory_api.GpuViewSet, basename="gpu")
router.register("listings", listing_api.ListingViewSet, basename="listing")
router.register("owner/listings", listing_api.OwnerListingViewSet, basename="owner-listing")
router.register("bookings", booking_api.BookingViewSet, basename="booking")
router.register("owner/clusters", scheduler_api.ClusterViewSet, basename="cluster")
router.register("jobs", scheduler_api.JobViewSet, basename="job")

api_v1 = [
    path("me/", MeApi.as_view(), name="me"),
    path("auth/token/", TokenApi.as_view(), name="token"),
    path("auth/tokens/", TokenListApi.as_view(), name="token-list"),
    path("auth/tokens/<int:pk>/", TokenDetailApi.as_view(), name="token-detail"),
    path("inventory/servers/import/", inventory_api.ServerImportApi.as_view(), name="server-import"),
    path("search/", listing_api.SearchApi.as_view(), name="search"),
    path("owner/earnings/", booking_api.OwnerEarningsApi.as_view(), name="owner-earnings"),
    path("bookings/<uuid:public_id>/usage/", booking_api.UsageApi.as_view(), name="booking-usage"),
    path("bookings/<uuid:public_id>/jobs/", scheduler_api.BookingJobsApi.as_view(), name="booking-jobs"),
    path("quick-book/", scheduler_api.QuickBookApi.as_view(), name="quick-book"),
    path("quick-book/options/", scheduler_api.QuickBookOptionsApi.as_view(), name="quick-book-options"),
    path("wallet/", financing_api.WalletApi.as_view(), name="wallet"),
    path("wallet/usdai/", financing_api.UsdaiBuyApi.as_view(), name="wallet-usdai"),
    path("wallet/usdai/<int:pk>/", financing_api.UsdaiPurchaseApi.as_view(), name="wallet-usdai-purchase"),
    path("wallet/usdai/withdrawals/", financing_api.UsdaiWithdrawalsApi.as_view(), name="wallet-usdai-withdrawals"),
    path("vault/", financing_api.VaultApi.as_view(), name="vault"),
    path("vault/deposits/", financing_api.VaultDepositApi.as_view(), name="vault-deposits"),
    path("vault/redemptions/", financing_api.RedemptionsApi.as_view(), name="vault-redemptions"),
    path(
        "vault/redemptions/<int:pk>/cancel/",
        financing_api.RedemptionCancelApi.as_view(),
        name="vault-redemption-cancel",
    ),
    path("vault/history/", financing_api.VaultHistoryApi.as_view(), name="vault-history"),
    path("proof/settlements/<int:pk>/", financing_api.SettlementProofApi.as_view(), name="settlement-proof"),
    path("owner/loans/", financing_api.LoanApplyApi.as_view(), name="owner-loans"),
    path("owner/collateral/<int:pk>/limit/", financing_api.CollateralLimitApi.as_view(), name="collateral-limit"),
    path("", include("financing.urls_api_wallets")),
    path("", include("financing.urls_api_payouts")),
    path("", include("scheduler.urls_api_sessions")),
    path("", include("scheduler.urls_api_endpoints")),
    path("", include("scheduler.urls_api_storage")),
    *router.urls,
]

# The API viewers' inline script and style run under this response's nonce. Redoc
# also inserts <style> elements at run time (with no way to pass them a nonce) and
# renders in a blob: worker: its page alone allows inline styles; scripts stay strict.
docs_csp = csp_update({"script-src": [NONCE], "style-src": [NONCE]})
redoc_csp = csp_update({"script-src": [NONCE], "style-src": [UNSAFE_INLINE], "worker-src": ["blob:"]})

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics_view, name="metrics"),
    path("", inventory_views.home, name="home"),
    path("dashboard/", account_views.dashboard, name="dashboard"),
    path("accounts/", include("allauth.urls")),
    path("account/", include("accounts.urls")),
    path("", include("marketplace.urls")),
    path("", include("financing.urls")),
    path("", include("scheduler.urls")),
    path("", include("scheduler.urls_sessions")),
    path("", include("scheduler.urls_endpoints")),
    path("", include("scheduler.urls_storage")),
    path("", include("scheduler.urls_scale")),
    path("api/v1/", include((api_v1, "api"))),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", docs_csp(SpectacularSwaggerView.as_view(url_name="schema")), name="swagger-ui"),
    path("api/redoc/", redoc_csp(SpectacularRedocView.as_view(url_name="schema")), name="redoc"),
    path(settings.ADMIN_URL, admin.site.urls),
]

admin.site.site_header = "InfraFi operations"
admin.site.site_title = "InfraFi operations"

# An unmatched /api/ path is a JSON 404 in the API's error shape (core.views).
handler404 = "core.views.not_found"
