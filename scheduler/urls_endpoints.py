"""Pages of the scheduler's endpoints (issue 15)."""

from django.urls import path  # noqa: F401

app_name = "scheduler_endpoints"

urlpatterns: list = []
