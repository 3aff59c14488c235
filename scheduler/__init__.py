"""Scheduler: renters' jobs on the owners' Kubernetes clusters.

It owns clusters (kubeconfigs encrypted at rest), node sync, placement (a
pure function), the job lifecycle, metering and failover. It imports
``marketplace`` (bookings, usage reporting) and ``financing`` only through
its selectors, for collateral-aware placement. Every Kubernetes call sits in
``scheduler/backends``.
"""
