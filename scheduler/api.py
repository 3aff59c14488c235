"""Scheduler api (clusters, jobs, placement; see the app docstring)."""
