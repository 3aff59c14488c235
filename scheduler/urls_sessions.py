"""Pages of the scheduler's sessions (issue 15)."""

from django.urls import path  # noqa: F401

app_name = "scheduler_sessions"

urlpatterns: list = []
