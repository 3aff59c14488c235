from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("roles/", views.roles, name="roles"),
    path("billing/", views.billing, name="billing"),
    path("company/", views.company, name="company"),
    path("wallet/", views.wallet, name="wallet"),
    path("invitations/", views.invitations, name="invitations"),
    path("invitations/<str:token>/", views.invitation_respond, name="invitation_respond"),
    path("api-token/", views.api_token, name="api_token"),
    path("api-token/<int:pk>/revoke/", views.api_token_revoke, name="api_token_revoke"),
]
