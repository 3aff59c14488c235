"""API endpoints of issue 14's wallets work (included under /api/v1/, namespace "api")."""

urlpatterns: list = []
