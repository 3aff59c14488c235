"""Pages of issue 14's payouts work (included from financing/urls.py, namespace "financing")."""

urlpatterns: list = []
