"""Pages of the scheduler's scale (issue 15)."""

from django.urls import path  # noqa: F401

app_name = "scheduler_scale"

urlpatterns: list = []
