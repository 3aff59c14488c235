"""API of the scheduler's storage (issue 15), under /api/v1/."""

from django.urls import path  # noqa: F401

urlpatterns: list = []
