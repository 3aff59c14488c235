"""Pages of issue 14's wallets work (included from financing/urls.py, namespace "financing")."""

urlpatterns: list = []
