"""Pages of the scheduler's storage (issue 15)."""

from django.urls import path  # noqa: F401

app_name = "scheduler_storage"

urlpatterns: list = []
