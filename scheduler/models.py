"""Scheduler models (clusters, jobs, placement; see the app docstring)."""
