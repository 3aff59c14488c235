"""Scheduler services (clusters, jobs, placement; see the app docstring)."""
