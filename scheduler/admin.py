"""Scheduler admin (clusters, jobs, placement; see the app docstring)."""
