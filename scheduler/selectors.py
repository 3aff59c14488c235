"""Scheduler selectors (clusters, jobs, placement; see the app docstring)."""
