"""Scheduler services: clusters and node sync, jobs (lifecycle, metering, failover), quick book."""
